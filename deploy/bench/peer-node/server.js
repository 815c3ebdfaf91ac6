'use strict';
// The benchmark peer of payhook's receiver (test tooling, see BENCHMARKS.md, "Peer
// comparison"): an Alipay notify endpoint written the way the integration guides
// write it, with every advantage they allow.
//
// - Node `cluster`, one worker per core (PEER_WORKERS, default os.availableParallelism()).
// - Express 5 with `express.urlencoded()`, as the alipay-sdk README and Alipay's Node
//   examples parse the form POST; the parsed object goes to the official SDK's
//   `checkNotifySignV2` (v4: values are not URL-decoded a second time).
// - amqplib: one long-lived connection and one ConfirmChannel per worker; every
//   verified notification is published persistent + mandatory with `messageId` to the
//   same exchange and routing key payhook uses (`<prefix>.notifications`,
//   `alipay.payment` / `alipay.refund`), so it lands in the same quorum queue
//   `<prefix>.work`. `success` is answered only in the confirm callback; `fail` on a
//   bad signature or app_id, a nack, a return (unroutable) or no confirm within
//   PEER_ACK_DEADLINE_MS (3000, payhook's ack_deadline_ms).
// - HTTP keep-alive (5 s, as payhook's actix-web), no per-request logging.
//
// PEER_VERIFY=keyobject is a diagnostic, not the peer: it replaces the SDK call by one
// `crypto.verify` with a cached KeyObject over the same V1 sign content (the SDK parses
// the PEM key on every call and, for a genuine notification, verifies twice: first
// with `sign_type` in the content, then without), to show what the SDK costs.
//
// Environment: PEER_PORT (8091), PEER_HOST (127.0.0.1), ALIPAY_APP_ID,
// ALIPAY_PUBLIC_KEY (bare Base64 SPKI as the Alipay console shows it, or PEM),
// AMQP_URL, PAYHOOK_PREFIX (the exchange/queue name prefix), PEER_WORKERS,
// PEER_ACK_DEADLINE_MS, PEER_VERIFY (sdk). The topology is declared by the bench
// runner (as payhook's receiver would), not here.

const cluster = require('node:cluster');
const os = require('node:os');
const crypto = require('node:crypto');

const PORT = Number(process.env.PEER_PORT || 8091);
const HOST = process.env.PEER_HOST || '127.0.0.1';
const WORKERS = Number(process.env.PEER_WORKERS || os.availableParallelism());

if (cluster.isPrimary) {
  let ready = 0;
  for (let i = 0; i < WORKERS; i++) cluster.fork();
  cluster.on('message', (_worker, msg) => {
    if (msg === 'ready' && ++ready === WORKERS) {
      // The bench runner waits for this line on stdout.
      console.log(`peer ready: ${WORKERS} workers on http://${HOST}:${PORT}`);
    }
  });
  cluster.on('exit', (worker, code, signal) => {
    console.error(`worker ${worker.process.pid} exited (${signal || code})`);
    process.exit(1);
  });
  const stop = () => {
    for (const id in cluster.workers) cluster.workers[id].kill('SIGTERM');
    process.exit(0);
  };
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
} else {
  worker().catch((err) => {
    console.error('worker failed to start:', err);
    process.exit(1);
  });
}

async function worker() {
  const express = require('express');
  const amqp = require('amqplib');
  const { AlipaySdk } = require('alipay-sdk');

  const appId = required('ALIPAY_APP_ID');
  const prefix = required('PAYHOOK_PREFIX');
  const exchange = `${prefix}.notifications`;
  const ackDeadlineMs = Number(process.env.PEER_ACK_DEADLINE_MS || 3000);

  const alipay = new AlipaySdk({
    appId,
    // The SDK requires the app private key; notify verification only uses the Alipay
    // public key. The peer never calls Alipay, so a throwaway key stands in.
    privateKey: crypto
      .generateKeyPairSync('rsa', { modulusLength: 2048 })
      .privateKey.export({ type: 'pkcs1', format: 'pem' }),
    alipayPublicKey: required('ALIPAY_PUBLIC_KEY'),
  });

  let checkSign = (params) => alipay.checkNotifySignV2(params);
  if (process.env.PEER_VERIFY === 'keyobject') {
    const key = crypto.createPublicKey(alipay.config.alipayPublicKey);
    checkSign = (params) => {
      const { sign, sign_type: _signType, ...rest } = params;
      if (typeof sign !== 'string') return false;
      const content = Object.keys(rest)
        .sort()
        .map((k) => `${k}=${rest[k]}`)
        .join('&');
      return crypto.verify('RSA-SHA256', Buffer.from(content, 'utf8'), key, Buffer.from(sign, 'base64'));
    };
  } else if (process.env.PEER_VERIFY && process.env.PEER_VERIFY !== 'sdk') {
    throw new Error(`PEER_VERIFY: unknown ${process.env.PEER_VERIFY}`);
  }

  const connection = await amqp.connect(required('AMQP_URL'));
  connection.on('error', (err) => console.error('amqp connection error:', err.message));
  connection.on('close', () => process.exit(1));
  const channel = await connection.createConfirmChannel();
  channel.on('error', (err) => console.error('amqp channel error:', err.message));

  // mandatory: an unroutable message comes back (basic.return) before its basic.ack.
  const inFlight = new Map(); // messageId -> pending publishes, oldest first
  channel.on('return', (msg) => {
    const list = inFlight.get(msg.properties.messageId);
    const pending = list && list.find((p) => !p.returned);
    if (pending) pending.returned = true;
  });

  function publish(routingKey, messageId, body) {
    return new Promise((resolve) => {
      const pending = { returned: false };
      let list = inFlight.get(messageId);
      if (!list) inFlight.set(messageId, (list = []));
      list.push(pending);
      const done = (ok) => {
        if (pending.settled) return;
        pending.settled = true;
        clearTimeout(timer);
        const i = list.indexOf(pending);
        if (i >= 0) list.splice(i, 1);
        if (list.length === 0 && inFlight.get(messageId) === list) inFlight.delete(messageId);
        resolve(ok);
      };
      const timer = setTimeout(() => done(false), ackDeadlineMs);
      channel.publish(
        exchange,
        routingKey,
        body,
        {
          persistent: true,
          mandatory: true,
          messageId,
          contentType: 'application/json',
          appId: 'peer-node',
          timestamp: Math.floor(Date.now() / 1000),
        },
        (err) => done(!err && !pending.returned),
      );
    });
  }

  const app = express();
  app.disable('x-powered-by');
  app.disable('etag');
  app.post('/notify/alipay', express.urlencoded({ extended: false }), async (req, res) => {
    const params = req.body;
    let verified = false;
    try {
      verified = checkSign(params) && params.app_id === appId;
    } catch {
      verified = false;
    }
    if (!verified) {
      res.status(401).type('text/plain').send('fail');
      return;
    }
    const kind = params.refund_fee || params.out_biz_no ? 'refund' : 'payment';
    const message = Buffer.from(
      JSON.stringify({
        provider: 'alipay',
        kind,
        event_id: `alipay:${params.notify_id}`,
        received_at: new Date().toISOString(),
        params,
      }),
    );
    const confirmed = await publish(`alipay.${kind}`, `alipay:${params.notify_id}`, message);
    if (confirmed) {
      res.status(200).type('text/plain').send('success');
    } else {
      res.status(503).type('text/plain').send('fail');
    }
  });
  app.get('/healthz', (_req, res) => res.send('ok'));

  const server = app.listen(PORT, HOST, () => process.send('ready'));
  server.keepAliveTimeout = 5000;
  server.headersTimeout = 6000;
  process.on('SIGTERM', () => {
    server.close();
    connection.close().finally(() => process.exit(0));
  });
}

function required(name) {
  const value = process.env[name];
  if (!value) {
    console.error(`${name} is required`);
    process.exit(2);
  }
  return value;
}
