"""A small TCP proxy in front of the real nginx that breaks the first connections on purpose.

Plan entries, one per accepted connection (then plain pass-through): ``("cut", n)`` forwards ``n`` bytes of
the response then resets the connection (a truncated response / dropped connection), ``("503",)`` answers one
``503 Service Unavailable`` itself, ``("reset",)`` resets at once, ``("stall",)`` reads the requests and never
answers (a hung server), ``("pass",)`` passes it through.
"""

from __future__ import annotations

import socket
import struct
import threading


def _rst(sock: socket.socket) -> None:
    """Close with an RST (SO_LINGER 0), like a crashed peer or a middlebox dropping the connection."""
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        sock.shutdown(socket.SHUT_RD)  # wake the pump thread blocked in recv(), so close() really closes
    except OSError:
        pass
    finally:
        sock.close()


class FlakyProxy:
    def __init__(self, upstream: tuple[str, int], plan: list[tuple]) -> None:
        self.upstream = upstream
        self.plan = list(plan)
        self.accepted = 0
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self._stop = False
        self._thread = threading.Thread(target=self._accept_loop, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> FlakyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop = True
        self.listener.close()

    def _accept_loop(self) -> None:
        while not self._stop:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            action = self.plan[self.accepted] if self.accepted < len(self.plan) else ("pass",)
            self.accepted += 1
            threading.Thread(target=self._handle, args=(client, action), daemon=True).start()

    def _handle(self, client: socket.socket, action: tuple) -> None:
        if action[0] == "reset":
            _rst(client)
            return
        if action[0] == "stall":
            try:
                while client.recv(65536) and not self._stop:
                    pass
            except OSError:
                pass
            client.close()
            return
        if action[0] == "503":
            client.recv(65536)
            client.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )
            client.close()
            return
        upstream = socket.create_connection(self.upstream)
        limit = action[1] if action[0] == "cut" else None

        def pump_up() -> None:
            try:
                while data := client.recv(65536):
                    upstream.sendall(data)
            except OSError:
                pass
            finally:
                try:
                    upstream.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

        threading.Thread(target=pump_up, daemon=True).start()
        sent = 0
        try:
            while data := upstream.recv(65536):
                if limit is not None and sent + len(data) >= limit:
                    client.sendall(data[: limit - sent])
                    _rst(client)
                    upstream.close()
                    return
                client.sendall(data)
                sent += len(data)
        except OSError:
            pass
        finally:
            for s in (client, upstream):
                try:
                    s.close()
                except OSError:
                    pass
