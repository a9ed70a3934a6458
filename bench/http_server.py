#!/usr/bin/env python3
"""A minimal HTTP/1.1 keep-alive server on 127.0.0.1 for the P4 benchmark.

asyncio with a raw protocol: every request (any method and path; a body is skipped by its
Content-Length, so it also stands in for an OTLP/HTTP collector) gets the same small 200 response
with a Content-Length, and the connection stays open. Far cheaper per request than
http.server, so the server costs both sides little and the comparison measures the clients.
Prints "ready" on stdout once it listens. Usage: http_server.py PORT
"""

import asyncio
import sys

BODY = b'{"ok":true}\n'
RESPONSE = (
    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
    + str(len(BODY)).encode()
    + b"\r\nConnection: keep-alive\r\n\r\n"
    + BODY
)


class Http(asyncio.Protocol):
    def connection_made(self, transport):
        self.transport = transport
        self.buffer = b""

    def data_received(self, data):
        self.buffer += data
        while True:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            # A request body (an OTLP export's protobuf, say) is skipped, not parsed as a request.
            length = 0
            for line in self.buffer[:end].split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value.strip() or 0)
            if len(self.buffer) < end + 4 + length:
                return
            self.buffer = self.buffer[end + 4 + length:]
            self.transport.write(RESPONSE)


async def main(port):
    loop = asyncio.get_running_loop()
    server = await loop.create_server(Http, "127.0.0.1", port)
    print("ready", flush=True)
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    try:
        asyncio.run(main(int(sys.argv[1])))
    except KeyboardInterrupt:
        pass
