"""A small WSGI app keeping logins in `SessionStore` (cache in front, database behind, sliding TTL).

The requests are made in-process (no server socket), so it runs anywhere as-is;
serve it for real with ``wsgiref.simple_server.make_server("127.0.0.1", 8000, app)``.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterable
from http.cookies import SimpleCookie
from typing import Any
from wsgiref.util import setup_testing_defaults

from pydantic import BaseModel

from kvstore import SessionStore, StorageManager


class Session(BaseModel):
    """What the app keeps per login (validated on write, parsed on read)."""

    user: str
    visits: int = 0


StartResponse = Callable[[str, list[tuple[str, str]]], Any]


def make_app(sessions: SessionStore[Session]) -> Callable[[dict[str, Any], StartResponse], Iterable[bytes]]:
    def app(environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        cookie = SimpleCookie(environ.get("HTTP_COOKIE", ""))
        sid = cookie["sid"].value if "sid" in cookie else None
        path = environ["PATH_INFO"]
        headers = [("Content-Type", "text/plain")]
        if path == "/login":
            user = environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0)).decode() or "guest"
            sid = sessions.create(Session(user=user))
            headers.append(("Set-Cookie", f"sid={sid}; HttpOnly; SameSite=Lax; Path=/"))
            body = f"welcome {user}"
        elif path == "/logout" and sid:
            sessions.delete(sid)
            body = "bye"
        else:
            session = sessions.get(sid, touch=True) if sid else None  # sliding expiry: each visit restarts the TTL
            if session is None or sid is None:
                start_response("401 Unauthorized", headers)
                return [b"please log in"]
            session.visits += 1
            sessions.set(sid, session)
            body = f"hello {session.user}, visit #{session.visits}"
        start_response("200 OK", headers)
        return [body.encode()]

    return app


def request(app: Any, path: str, *, cookie: str = "", body: str = "") -> tuple[str, dict[str, str], str]:
    """Call the WSGI app in-process, like a test client."""
    environ: dict[str, Any] = {"PATH_INFO": path, "HTTP_COOKIE": cookie, "REQUEST_METHOD": "POST" if body else "GET"}
    setup_testing_defaults(environ)
    environ["wsgi.input"] = io.BytesIO(body.encode())
    environ["CONTENT_LENGTH"] = str(len(body))
    response: dict[str, Any] = {}

    def start_response(status: str, headers: list[tuple[str, str]]) -> None:
        response["status"], response["headers"] = status, dict(headers)

    text = b"".join(app(environ, start_response)).decode()
    return response["status"], response["headers"], text


def main() -> None:
    with StorageManager() as storage:  # memory cache + ./.kvstore/kvstore.db; configure Redis/Postgres the same way
        sessions = SessionStore.from_backends(storage, model=Session, ttl=1800, cache_ttl=300)
        app = make_app(sessions)
        print(request(app, "/")[0], "(no cookie)")
        status, headers, text = request(app, "/login", body="ada")
        print(status, text)
        cookie = headers["Set-Cookie"].split(";")[0]
        sid = cookie.split("=", 1)[1]
        for _ in range(2):
            print(*request(app, "/", cookie=cookie)[::2])
        print(f"session TTL left: {sessions.ttl_of(sid):.0f} s (sliding, 30 min)")
        sessions.invalidate(sid)  # drop the cached copy: the next read comes from the database, and re-warms
        print(*request(app, "/", cookie=cookie)[::2], "(read through from the database)")
        print(*request(app, "/logout", cookie=cookie)[::2])
        print(request(app, "/", cookie=cookie)[0], "(logged out)")


if __name__ == "__main__":
    main()
