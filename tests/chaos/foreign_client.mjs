// A netlet client in another language, written from docs/PROTOCOL.md alone.
//
// Node.js, its standard library only (net, crypto, fs): msgpack is coded here.
// Usage: node foreign_client.mjs KEY_FILE tcp://HOST:PORT
// Against `python -m tests.chaos._peers gateway`: calls `svc`, submits tasks
// through the served object `tasks` (which hands them to a cluster head), and
// sends and receives on the served channel `box`. Prints one JSON line of
// figures and exits 0, or prints the failure and exits 1.

import { createHmac, createHash, randomBytes, timingSafeEqual } from "node:crypto";
import { readFileSync } from "node:fs";
import { connect } from "node:net";

const CALL = 1, REPLY = 2, ERROR = 3;
const EXT_TUPLE = 1, EXT_EXCEPTION = 11;

// -- msgpack (PROTOCOL.md §2, §6) ---------------------------------------------------

class Ext { constructor(code, data) { this.code = code; this.data = data; } }

function encode(value) {
  const parts = [];
  const u8 = (...b) => parts.push(Buffer.from(b));
  const be = (n, size) => { const b = Buffer.alloc(size); b.writeUIntBE(n, 0, size); parts.push(b); };
  const put = (v) => {
    if (v === null || v === undefined) u8(0xc0);
    else if (v === false) u8(0xc2);
    else if (v === true) u8(0xc3);
    else if (typeof v === "number" && Number.isInteger(v)) {
      if (v >= 0 && v < 128) u8(v);
      else if (v < 0 && v >= -32) u8(v & 0xff);
      else if (v >= 0 && v <= 0xffffffff) { u8(0xce); be(v, 4); }
      else { const b = Buffer.alloc(9); b[0] = 0xd3; b.writeBigInt64BE(BigInt(v), 1); parts.push(b); }
    } else if (typeof v === "number") {
      const b = Buffer.alloc(9); b[0] = 0xcb; b.writeDoubleBE(v, 1); parts.push(b);
    } else if (typeof v === "string") {
      const s = Buffer.from(v, "utf8");
      if (s.length < 32) u8(0xa0 | s.length);
      else { u8(0xdb); be(s.length, 4); }
      parts.push(s);
    } else if (Buffer.isBuffer(v)) { u8(0xc6); be(v.length, 4); parts.push(v); }
    else if (v instanceof Ext) { u8(0xc9); be(v.data.length, 4); u8(v.code); parts.push(v.data); }
    else if (Array.isArray(v)) {
      if (v.length < 16) u8(0x90 | v.length); else { u8(0xdd); be(v.length, 4); }
      v.forEach(put);
    } else if (typeof v === "object") {
      const keys = Object.keys(v);
      if (keys.length < 16) u8(0x80 | keys.length); else { u8(0xdf); be(keys.length, 4); }
      for (const k of keys) { put(k); put(v[k]); }
    } else throw new TypeError(`cannot encode ${typeof v}`);
  };
  put(value);
  return Buffer.concat(parts);
}

function decode(buf) {
  let at = 0;
  const take = (n) => { const b = buf.subarray(at, at + n); at += n; return b; };
  const uint = (n) => { const v = buf.readUIntBE(at, n); at += n; return v; };
  const arr = (n) => { const out = []; for (let i = 0; i < n; i++) out.push(get()); return out; };
  const map = (n) => { const out = {}; for (let i = 0; i < n; i++) { const k = get(); out[k] = get(); } return out; };
  const ext = (n) => { const code = buf.readInt8(at); at += 1; return extension(code, take(n)); };
  const get = () => {
    const t = buf[at++];
    if (t < 0x80) return t;
    if (t < 0x90) return map(t & 0x0f);
    if (t < 0xa0) return arr(t & 0x0f);
    if (t < 0xc0) return take(t & 0x1f).toString("utf8");
    if (t >= 0xe0) return t - 0x100;
    switch (t) {
      case 0xc0: return null;
      case 0xc2: return false;
      case 0xc3: return true;
      case 0xc4: return Buffer.from(take(uint(1)));
      case 0xc5: return Buffer.from(take(uint(2)));
      case 0xc6: return Buffer.from(take(uint(4)));
      case 0xc7: return ext(uint(1));
      case 0xc8: return ext(uint(2));
      case 0xc9: return ext(uint(4));
      case 0xca: { const v = buf.readFloatBE(at); at += 4; return v; }
      case 0xcb: { const v = buf.readDoubleBE(at); at += 8; return v; }
      case 0xcc: return uint(1);
      case 0xcd: return uint(2);
      case 0xce: return uint(4);
      case 0xcf: { const v = buf.readBigUInt64BE(at); at += 8; return Number(v); }
      case 0xd0: { const v = buf.readInt8(at); at += 1; return v; }
      case 0xd1: { const v = buf.readInt16BE(at); at += 2; return v; }
      case 0xd2: { const v = buf.readInt32BE(at); at += 4; return v; }
      case 0xd3: { const v = buf.readBigInt64BE(at); at += 8; return Number(v); }
      case 0xd4: return ext(1);
      case 0xd5: return ext(2);
      case 0xd6: return ext(4);
      case 0xd7: return ext(8);
      case 0xd8: return ext(16);
      case 0xd9: return take(uint(1)).toString("utf8");
      case 0xda: return take(uint(2)).toString("utf8");
      case 0xdb: return take(uint(4)).toString("utf8");
      case 0xdc: return arr(uint(2));
      case 0xdd: return arr(uint(4));
      case 0xde: return map(uint(2));
      case 0xdf: return map(uint(4));
      default: throw new Error(`msgpack type 0x${t.toString(16)} not handled`);
    }
  };
  return get();
}

function extension(code, data) {
  if (code === EXT_TUPLE) return decode(data); // a tuple: an array here
  if (code === EXT_EXCEPTION) {                 // §7: [type, ext 0 args, message, traceback]
    const [type, args, message] = decode(data);
    return { exception: type, args: args instanceof Ext ? decode(args.data) : args, message };
  }
  return new Ext(code, Buffer.from(data));
}

// -- frames and the connection (§3, §4, §5) -----------------------------------------

function frame(body) {
  const head = Buffer.alloc(8);
  head.writeUInt32BE(body.length, 0); // body_len; nbufs stays 0: no out-of-band buffers sent
  return Buffer.concat([head, body]);
}

class Connection {
  constructor(socket) {
    this.socket = socket;
    socket.setNoDelay(true); // small frames go out at once (as netlet sets TCP_NODELAY)
    this.data = Buffer.alloc(0);
    this.frames = [];
    this.waiting = null;
    this.pending = new Map();
    this.nextId = 1;
    this.node = randomBytes(16).toString("hex");
    socket.on("data", (chunk) => { this.data = Buffer.concat([this.data, chunk]); this.split(); });
    socket.on("close", () => this.fail(new Error("connection closed by the server")));
    socket.on("error", (e) => this.fail(e));
  }

  split() {
    for (;;) {
      if (this.data.length < 8) return;
      const bodyLen = this.data.readUInt32BE(0), nbufs = this.data.readUInt32BE(4);
      const headLen = 8 + 4 * nbufs;
      if (this.data.length < headLen) return;
      let total = headLen + bodyLen;
      for (let i = 0; i < nbufs; i++) total += this.data.readUInt32BE(8 + 4 * i);
      if (this.data.length < total) return;
      if (nbufs !== 0) throw new Error("out-of-band buffers are not expected in this client");
      const body = Buffer.from(this.data.subarray(headLen, headLen + bodyLen));
      this.data = this.data.subarray(total);
      this.deliver(body);
    }
  }

  deliver(body) {
    if (this.handshaking) {
      if (this.waiting) { const w = this.waiting; this.waiting = null; w.resolve(body); }
      else this.frames.push(body);
      return;
    }
    const [kind, id, value] = decode(body);
    const call = this.pending.get(id);
    if ((kind === REPLY || kind === ERROR) && call) {
      this.pending.delete(id);
      if (kind === REPLY) call.resolve(value); else call.reject(Object.assign(new Error(value.message), value));
    } else if (kind === 5) { // PING: answer PONG with the same payload (§5.6)
      this.socket.write(frame(encode([6, id])));
    }
  }

  fail(error) {
    if (this.waiting) { this.waiting.reject(error); this.waiting = null; }
    for (const call of this.pending.values()) call.reject(error);
    this.pending.clear();
  }

  nextFrame() {
    if (this.frames.length) return Promise.resolve(this.frames.shift());
    return new Promise((resolve, reject) => { this.waiting = { resolve, reject }; });
  }

  async handshake(key) {
    this.handshaking = true;
    const hello = encode({ netlet: 1, node: this.node, address: "", nonce: randomBytes(32),
      auth: "hmac-sha256", role: "link", pickle: false });
    this.socket.write(frame(hello));
    const serverHello = await this.nextFrame();
    const reply = decode(serverHello);
    if (reply.error) throw new Error(`refused: ${reply.message}`);
    // §4.4: HMAC-SHA256(key, label || 0 || sha256(client hello) || sha256(server hello))
    const transcript = Buffer.concat([createHash("sha256").update(hello).digest(),
      createHash("sha256").update(serverHello).digest()]);
    const proof = (label) => createHmac("sha256", key)
      .update(Buffer.concat([Buffer.from(label), Buffer.from([0]), transcript])).digest();
    const theirs = decode(await this.nextFrame()).proof;
    if (!Buffer.isBuffer(theirs) || !timingSafeEqual(theirs, proof("server")))
      throw new Error("the server does not hold the cluster key");
    this.socket.write(frame(encode({ proof: proof("client") })));
    const done = decode(await this.nextFrame());
    if (done.ok !== true) throw new Error(`handshake refused: ${JSON.stringify(done)}`);
    this.handshaking = false;
    return reply;
  }

  call(target, method, args = [], kwargs = null) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.socket.write(frame(encode([CALL, id, target, method, args, kwargs])));
    });
  }

  oneway(target, method, args = []) {
    this.socket.write(frame(encode([CALL, 0, target, method, args, null])));
  }
}

function open(address) {
  const m = /^tcp:\/\/\[?([^\]]+)\]?:(\d+)$/.exec(address);
  if (!m) throw new Error(`not a tcp:// address: ${address}`);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: m[1], port: Number(m[2]) }, () => resolve(new Connection(socket)));
    socket.once("error", reject);
  });
}

// -- the scenario -----------------------------------------------------------------

function check(ok, what) { if (!ok) throw new Error(`check failed: ${what}`); }
const same = (a, b) => JSON.stringify(a) === JSON.stringify(b);

async function main() {
  const [keyFile, address] = process.argv.slice(2);
  const key = Buffer.from(readFileSync(keyFile, "utf8").trim(), "hex");
  const conn = await open(address);
  const started = performance.now();
  const server = await conn.handshake(key);
  const out = { server_node: server.node, handshake_ms: performance.now() - started };

  // Objects: calls, values both ways, an exception.
  check((await conn.call("svc", "add", [2, 3])) === 5, "svc.add(2, 3) == 5");
  check((await conn.call("svc", "add", [40], { b: 2 })) === 42, "add by keyword");
  const value = { text: "héllo", list: [1, -7, 2.5, null, true], bytes: Buffer.from([0, 255]) };
  const echoed = await conn.call("svc", "echo", [value]);
  check(same(echoed, value), `echo gave ${JSON.stringify(echoed)}`);
  try { await conn.call("svc", "nope"); check(false, "svc.nope raised"); }
  catch (e) { check(e.exception === "netlet.errors.NotExposed", `NotExposed, got ${e.exception}`); }
  let t = performance.now();
  const calls = await Promise.all(Array.from({ length: 200 }, (_, i) => conn.call("svc", "add", [i, i])));
  check(same(calls, Array.from({ length: 200 }, (_, i) => 2 * i)), "200 pipelined calls");
  out.pipelined_calls_ms = performance.now() - t;

  // Tasks, submitted through a served object that hands them to the cluster head.
  t = performance.now();
  const squares = await conn.call("tasks", "squares", [50]);
  check(same(squares, Array.from({ length: 50 }, (_, i) => i * i)), `squares: ${squares}`);
  out.tasks = squares.length;
  out.tasks_ms = performance.now() - t;

  // A served channel: pipelined sends, then acknowledged receives, in order.
  t = performance.now();
  const n = 300;
  await Promise.all(Array.from({ length: n }, (_, i) => conn.call("box", "send", [`v${i}`, 10])));
  const got = [];
  for (let i = 0; i < n; i++) {
    const ticket = `${conn.node}:${i.toString(16).padStart(16, "0")}`;
    const [tag, v] = await conn.call("box", "receive", [10, ticket]);
    check(tag === "value", `receive tag ${tag}`);
    conn.oneway("box", "ack", [ticket]);
    got.push(v);
  }
  check(same(got, Array.from({ length: n }, (_, i) => `v${i}`)), "channel values in order, none lost");
  const stats = await conn.call("box", "statistics");
  check(stats.buffered === 0, `nothing left in the box: ${JSON.stringify(stats)}`);
  out.channel_values = n;
  out.channel_ms = performance.now() - t;
  conn.socket.end();
  console.log(JSON.stringify(out));
}

main().then(() => process.exit(0), (e) => { console.error(`FAILED: ${e.stack || e}`); process.exit(1); });
