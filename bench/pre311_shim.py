#!/usr/bin/env python3
"""A relay that lets clients which always send ExchangeCommandVersions (0x001b, RabbitMQ 3.11+)
talk to RabbitMQ 3.10, which closes the connection on it: the relay answers 0x001b itself (OK,
no versions) and rewrites the port in MetadataResponse frames to its own, so that the clients'
producer and consumer connections come through it too. Everything else is relayed unchanged.
The captures in ../shared/captures were made the same way (README there).

    bench/pre311_shim.py LISTEN_PORT BROKER_PORT
"""
import asyncio
import struct
import sys

EXCHANGE_COMMAND_VERSIONS = 0x001B
METADATA_RESPONSE = 0x800F


def frames(buf):
    """Whole frames at the start of buf (size prefix included), and what is left."""
    out, pos = [], 0
    while len(buf) - pos >= 4:
        (size,) = struct.unpack_from(">I", buf, pos)
        if len(buf) - pos < 4 + size:
            break
        out.append(bytes(buf[pos:pos + 4 + size]))
        pos += 4 + size
    return out, buf[pos:]


def rewrite_metadata(frame, port):
    """The brokers' ports of a MetadataResponse replaced by `port` (same length: u32)."""
    data = bytearray(frame)
    pos = 4 + 2 + 2 + 4  # size, key, version, correlation id
    (count,) = struct.unpack_from(">i", data, pos)
    pos += 4
    for _ in range(count):
        pos += 2  # reference
        (host_len,) = struct.unpack_from(">h", data, pos)
        pos += 2 + max(host_len, 0)
        struct.pack_into(">I", data, pos, port)
        pos += 4
    return bytes(data)


async def pump(reader, writer, handle):
    buf = b""
    try:
        while data := await reader.read(1 << 16):
            whole, buf = frames(buf + data)
            out = [f for f in (handle(f) for f in whole) if f]
            if out:
                writer.write(b"".join(out))
                await writer.drain()
    except (ConnectionError, asyncio.IncompleteReadError):
        pass
    finally:
        writer.close()


async def serve(client_r, client_w, listen_port, broker_port):
    try:
        broker_r, broker_w = await asyncio.open_connection("127.0.0.1", broker_port)
    except OSError:
        client_w.close()
        return

    def upstream(frame):
        (key,) = struct.unpack_from(">H", frame, 4)
        if key == EXCHANGE_COMMAND_VERSIONS:
            (corr,) = struct.unpack_from(">I", frame, 8)
            # Response: key, version 1, correlation id, code OK, no commands.
            answer = struct.pack(">HHIHI", 0x801B, 1, corr, 1, 0)
            client_w.write(struct.pack(">I", len(answer)) + answer)
            return None
        return frame

    def downstream(frame):
        (key,) = struct.unpack_from(">H", frame, 4)
        return rewrite_metadata(frame, listen_port) if key == METADATA_RESPONSE else frame

    await asyncio.gather(
        pump(client_r, broker_w, upstream), pump(broker_r, client_w, downstream)
    )


async def main():
    listen_port, broker_port = int(sys.argv[1]), int(sys.argv[2])
    server = await asyncio.start_server(
        lambda r, w: serve(r, w, listen_port, broker_port), "127.0.0.1", listen_port
    )
    async with server:
        await server.serve_forever()


if __name__ == "__main__":
    asyncio.run(main())
