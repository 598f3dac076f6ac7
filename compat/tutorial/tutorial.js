// RabbitMQ's Offset Tracking tutorial with the Node client rabbitmq-stream-js-client, printing
// the Go tutorial's lines. Usage: node tutorial.js PORT STREAM send|first|next|offset:N|tracking
const rabbit = require("rabbitmq-stream-js-client");
const [port, stream, mode] = process.argv.slice(2);
const args = { "max-length-bytes": 2000000000 };
const consumerRef = "offset-tracking-tutorial";

function connect() {
  return rabbit.connect({ hostname: "localhost", port: Number(port), username: "guest", password: "guest", vhost: "/" });
}

async function send() {
  const client = await connect();
  await client.createStream({ stream, arguments: args });
  const publisher = await client.declarePublisher({ stream });
  let confirmed = 0;
  const done = new Promise((resolve) => {
    publisher.on("publish_confirm", (err, ids) => {
      confirmed += ids.length;
      if (confirmed >= 100) resolve();
    });
  });
  console.log("Publishing 100 messages");
  for (let i = 0; i < 100; i++) await publisher.send(Buffer.from(i === 99 ? "marker" : "hello"));
  await done;
  console.log("Messages confirmed");
  await client.close();
}

async function receive() {
  const client = await connect();
  await client.createStream({ stream, arguments: args });
  let offset = rabbit.Offset.first();
  if (mode === "next") offset = rabbit.Offset.next();
  if (mode.startsWith("offset:")) offset = rabbit.Offset.offset(BigInt(mode.slice(7)));
  if (mode === "tracking") {
    try {
      offset = rabbit.Offset.offset((await client.queryOffset({ reference: consumerRef, stream })) + 1n);
    } catch (e) {
      // No stored offset yet: start at first.
    }
  }
  let first, last;
  let count = 0;
  let finish;
  const done = new Promise((resolve) => (finish = resolve));
  // Printed before subscribing: messages may arrive before declareConsumer resolves.
  console.log("Started consuming...");
  const consumer = await client.declareConsumer({ stream, offset, consumerRef }, async (message) => {
    if (last !== undefined) return;
    count++;
    if (first === undefined) {
      first = message.offset;
      console.log("First message received.");
    }
    const isMarker = message.content.toString() === "marker";
    // Every 10th message (the 1st would race declareConsumer's result) and the marker.
    if (mode === "tracking" && (count % 10 === 0 || isMarker)) await consumer.storeOffset(message.offset);
    if (isMarker) {
      last = message.offset;
      finish();
    }
  });
  await done;
  await consumer.close(true);
  console.log(`Done consuming, first offset ${first}, last offset ${last}.`);
  await client.close();
}

(mode === "send" ? send() : receive())
  .then(() => process.exit(0))
  .catch((e) => {
    console.error(e);
    process.exit(1);
  });
