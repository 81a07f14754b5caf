"""The async implementation: the single source the sync code is generated from."""
