"""RabbitMQ's Offset Tracking tutorial with the Python client rstream, printing the Go
tutorial's lines. Usage: tutorial.py PORT STREAM send|first|next|offset:N|tracking"""
import asyncio
import sys

from rstream import (AMQPMessage, ConfirmationStatus, Consumer, ConsumerOffsetSpecification,
                     MessageContext, OffsetNotFound, OffsetType, Producer, amqp_decoder)

PORT, STREAM, MODE = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ARGS = {"max-length-bytes": 2_000_000_000}
CONSUMER = "offset-tracking-tutorial"


async def send():
    confirmed = 0
    done = asyncio.Event()

    async def on_confirm(status: ConfirmationStatus):
        nonlocal confirmed
        if status.is_confirmed:
            confirmed += 1
            if confirmed == 100:
                done.set()

    async with Producer("localhost", port=PORT, username="guest", password="guest") as producer:
        await producer.create_stream(STREAM, exists_ok=True, arguments=ARGS)
        print("Publishing 100 messages", flush=True)
        for i in range(100):
            body = b"marker" if i == 99 else b"hello"
            await producer.send(stream=STREAM, message=AMQPMessage(body=body), on_publish_confirm=on_confirm)
        await asyncio.wait_for(done.wait(), 30)
        print("Messages confirmed", flush=True)


async def receive():
    first = last = None
    count = -1
    consumer = Consumer("localhost", port=PORT, username="guest", password="guest")
    await consumer.create_stream(STREAM, exists_ok=True, arguments=ARGS)
    await consumer.start()
    if MODE == "first":
        spec = ConsumerOffsetSpecification(OffsetType.FIRST, None)
    elif MODE == "next":
        spec = ConsumerOffsetSpecification(OffsetType.NEXT, None)
    elif MODE.startswith("offset:"):
        spec = ConsumerOffsetSpecification(OffsetType.OFFSET, int(MODE[7:]))
    else:
        try:
            stored = await consumer.query_offset(stream=STREAM, subscriber_name=CONSUMER)
            spec = ConsumerOffsetSpecification(OffsetType.OFFSET, stored + 1)
        except OffsetNotFound:
            spec = ConsumerOffsetSpecification(OffsetType.FIRST, None)
    done = asyncio.Event()

    async def on_message(msg, ctx: MessageContext):
        nonlocal first, last, count
        if last is not None:
            return
        if first is None:
            first = ctx.offset
            print("First message received.", flush=True)
        count += 1
        body = bytes(msg.body) if not isinstance(msg.body, list) else b"".join(msg.body)
        if MODE == "tracking" and (count % 10 == 0 or body == b"marker"):
            await ctx.consumer.store_offset(stream=STREAM, offset=ctx.offset, subscriber_name=ctx.subscriber_name)
        if body == b"marker":
            last = ctx.offset
            done.set()

    # Printed before subscribing: callbacks may run before subscribe() returns.
    print("Started consuming...", flush=True)
    await consumer.subscribe(stream=STREAM, subscriber_name=CONSUMER, callback=on_message,
                             decoder=amqp_decoder, offset_specification=spec)
    await asyncio.wait_for(done.wait(), 30)
    await consumer.close()
    print(f"Done consuming, first offset {first}, last offset {last}.", flush=True)


asyncio.run(send() if MODE == "send" else receive())
