// Drives kafkajs through the recording proxy: a producer with every codec kafkajs
// carries without native add-ons (none, gzip, snappy via kafkajs-snappy), a consumer group that
// reads everything, commits and leaves, and admin offset look-ups. Last stdout line: client
// versions as JSON.
//
// Usage: node kafkajs_driver.js BOOTSTRAP TOPIC GROUP   (NODE_PATH must reach the pinned
// node_modules in .test-deps/node)
'use strict';

const { Kafka, CompressionTypes, CompressionCodecs, logLevel } = require('kafkajs');
const SnappyCodec = require('kafkajs-snappy');

// Records per codec: small, so the captured Fetch responses stay small.
const MESSAGES_PER_CODEC = 3;
const CODECS = [
  ['none', CompressionTypes.None],
  ['gzip', CompressionTypes.GZIP],
  ['snappy', CompressionTypes.Snappy],
];
const CONSUME_DEADLINE_MS = 60000;

CompressionCodecs[CompressionTypes.Snappy] = SnappyCodec;

async function produce(kafka, topic) {
  // Not idempotent (kafkajs's default): kafkajs sends InitProducerId to the controller, and the
  // mock's Metadata names a controller id that is none of its brokers, so kafkajs gives up
  // ("Broker 0 not found in the cached metadata").
  const producer = kafka.producer({ idempotent: false });
  await producer.connect();
  for (const [name, codec] of CODECS) {
    const messages = [];
    for (let i = 0; i < MESSAGES_PER_CODEC; i++) {
      messages.push({
        key: `key-${name}-${i}`,
        value: `value ${i} compressed with ${name}`,
        partition: 0,
        headers: { source: 'kafkajs', codec: name },
      });
    }
    await producer.send({ topic, compression: codec, acks: -1, messages });
  }
  await producer.disconnect();
}

async function consume(kafka, topic, group) {
  const consumer = kafka.consumer({ groupId: group, heartbeatInterval: 500 });
  await consumer.connect();
  await consumer.subscribe({ topics: [topic], fromBeginning: true });
  const wanted = MESSAGES_PER_CODEC * CODECS.length;
  let got = 0;
  let done;
  const finished = new Promise((resolve) => { done = resolve; });
  await consumer.run({
    autoCommit: false,
    eachMessage: async ({ topic: t, partition, message }) => {
      got += 1;
      await consumer.commitOffsets([
        { topic: t, partition, offset: (BigInt(message.offset) + 1n).toString() },
      ]);
      if (got >= wanted) done();
    },
  });
  const timer = setTimeout(() => done(new Error(`consumed ${got} of ${wanted} messages`)),
    CONSUME_DEADLINE_MS);
  const err = await finished;
  clearTimeout(timer);
  await consumer.disconnect();
  if (err) throw err;
}

async function admin(kafka, topic, group) {
  const client = kafka.admin();
  await client.connect();
  await client.fetchTopicOffsets(topic);
  await client.fetchTopicOffsetsByTimestamp(topic, 0);
  await client.fetchOffsets({ groupId: group, topics: [topic] });
  await client.disconnect();
}

async function main() {
  const [bootstrap, topic, group] = process.argv.slice(2);
  const kafka = new Kafka({
    clientId: 'kafkajs-fixtures',
    brokers: [bootstrap],
    logLevel: logLevel.WARN,
    retry: { retries: 3 },
  });
  await produce(kafka, topic);
  await consume(kafka, topic, group);
  await admin(kafka, topic, group);
  const versions = {
    kafkajs: require('kafkajs/package.json').version,
    'kafkajs-snappy': require('kafkajs-snappy/package.json').version,
    node: process.version,
  };
  console.log(JSON.stringify(versions));
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
