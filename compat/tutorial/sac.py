"""Single active consumer with the Python client rstream (issue #14): a plain stream and a super
stream, each with rstream's default ConsumerUpdate answer (no listener: "next", sent with 8
trailing offset bytes) and with a listener answering an explicit offset.

Usage: sac.py PORT. Prints PASS|FAIL per case; exits non-zero on a failure."""
import asyncio
import sys

from rstream import (AMQPMessage, Consumer, ConsumerOffsetSpecification, MessageContext,
                     OffsetSpecification, OffsetType, Producer, RouteType, SuperStreamConsumer,
                     SuperStreamCreationOption, SuperStreamProducer, amqp_decoder)

PORT = int(sys.argv[1])
AUTH = dict(username="guest", password="guest")
SAC = {"single-active-consumer": "true", "name": "sac-app"}
failures = 0


def report(name, ok, detail=""):
    global failures
    print(("PASS " if ok else "FAIL ") + name + ("" if ok else f": {detail}"), flush=True)
    failures += 0 if ok else 1


async def routing_key(message):
    return message.body.decode()


async def from_zero(is_active, ctx):
    return OffsetSpecification(OffsetType.OFFSET, 0)


async def plain(listener, name):
    stream = f"sac-{name}"
    received = []
    got = asyncio.Event()
    wanted = 10 if listener else 5

    async def on_message(msg, ctx: MessageContext):
        received.append(bytes(msg.body))
        if len(received) >= wanted:
            got.set()

    async with Producer("localhost", port=PORT, **AUTH) as producer:
        await producer.create_stream(stream, exists_ok=True)
        if listener:
            # Published before the consumer exists: it must start where the listener says.
            for i in range(10):
                await producer.send_wait(stream, AMQPMessage(body=f"m{i}".encode()))
        consumer = Consumer("localhost", port=PORT, **AUTH)
        await consumer.start()
        await consumer.subscribe(stream, on_message, decoder=amqp_decoder, properties=dict(SAC),
                                 offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
                                 consumer_update_listener=listener)
        # The default answer starts the consumer at "next": publish until it receives.
        i = 0
        while not listener and not got.is_set():
            await producer.send_wait(stream, AMQPMessage(body=f"n{i}".encode()))
            i += 1
            try:
                await asyncio.wait_for(got.wait(), 0.1)
            except asyncio.TimeoutError:
                pass
        try:
            await asyncio.wait_for(got.wait(), 20)
            ok = not listener or received[:10] == [f"m{i}".encode() for i in range(10)]
            report(f"sac plain stream, {name}", ok, f"received {received[:12]}")
        except asyncio.TimeoutError:
            report(f"sac plain stream, {name}", False, f"received {len(received)} of {wanted}")
        await consumer.close()


async def superstream(listener, name):
    sstream = f"sac-super-{name}"
    received = []
    got = asyncio.Event()
    wanted = 30 if listener else 5

    async def on_message(msg, ctx: MessageContext):
        received.append(bytes(msg.body))
        if len(received) >= wanted:
            got.set()

    producer = SuperStreamProducer("localhost", port=PORT, **AUTH, super_stream=sstream,
                                   super_stream_creation_option=SuperStreamCreationOption(n_partitions=3),
                                   routing=RouteType.Hash, routing_extractor=routing_key)
    await producer.start()
    if listener:
        confirmed = asyncio.Event()
        count = 0

        async def on_confirm(status):
            nonlocal count
            count += 1
            if count == 30:
                confirmed.set()

        for i in range(30):
            await producer.send(AMQPMessage(body=f"m{i}".encode()), on_publish_confirm=on_confirm)
        await asyncio.wait_for(confirmed.wait(), 20)
    consumer = SuperStreamConsumer("localhost", port=PORT, **AUTH, super_stream=sstream)
    await consumer.start()
    await consumer.subscribe(on_message, decoder=amqp_decoder, properties=dict(SAC),
                             offset_specification=ConsumerOffsetSpecification(OffsetType.FIRST, None),
                             consumer_update_listener=listener)
    i = 0
    while not listener and not got.is_set():
        await producer.send(AMQPMessage(body=f"n{i}".encode()))
        i += 1
        try:
            await asyncio.wait_for(got.wait(), 0.1)
        except asyncio.TimeoutError:
            pass
    try:
        await asyncio.wait_for(got.wait(), 20)
        ok = not listener or sorted(received) == sorted(f"m{i}".encode() for i in range(30))
        report(f"sac super stream, {name}", ok, f"received {sorted(received)[:12]}")
    except asyncio.TimeoutError:
        report(f"sac super stream, {name}", False, f"received {len(received)} of {wanted}")
    await consumer.close()
    await producer.close()


async def main():
    await plain(None, "default answer")
    await plain(from_zero, "explicit offset")
    await superstream(None, "default answer")
    await superstream(from_zero, "explicit offset")


asyncio.run(main())
sys.exit(1 if failures else 0)
