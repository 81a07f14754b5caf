# Generated from kvstore/_async/__init__.py by tools/unasync.py: do not edit; edit the async source.
"""The async implementation: the single source the sync code is generated from."""
