// A Node client of batchgate with @grpc/grpc-js and @grpc/proto-loader, loading proto/
// at run time (no generated code), against the gateway tests/adoption.rs starts.
//
// Env: BATCHGATE_ADDR (host:port, plaintext), BATCHGATE_PROTO_DIR (the repo's proto/).
// Prints `ok: <step>` on stdout after asserting each reply; every call has a deadline.
//
// keepCase: true keeps the proto's snake_case field names (`request_id`, `job_id`).
// With proto-loader's defaults they are camelCased (`requestId`), and a snake_case key
// in a plain object is then silently dropped: the call goes out without it.
"use strict";

const path = require("node:path");
const assert = require("node:assert/strict");
const crypto = require("node:crypto");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const CALL_MS = 10_000; // deadline of a unary call
const STREAM_MS = 60_000; // deadline of a whole server stream

const protoDir = process.env.BATCHGATE_PROTO_DIR;
const addr = process.env.BATCHGATE_ADDR;
assert.ok(protoDir && addr, "set BATCHGATE_ADDR and BATCHGATE_PROTO_DIR");

const definition = protoLoader.loadSync(
  [path.join("batchgate", "sutro", "v1", "jobs.proto"), path.join("batchgate", "xai", "v1", "batches.proto")],
  { keepCase: true, longs: String, enums: String, defaults: true, oneofs: true, includeDirs: [protoDir] },
);
const api = grpc.loadPackageDefinition(definition);

const ok = (step, detail = "") => console.log(`ok: ${step}${detail ? " " + detail : ""}`);
const deadline = (ms) => ({ deadline: new Date(Date.now() + ms) });

function unary(client, method, request) {
  return new Promise((resolve, reject) => {
    client[method](request, deadline(CALL_MS), (error, reply) => (error ? reject(error) : resolve(reply)));
  });
}

function stream(client, method, request) {
  return new Promise((resolve, reject) => {
    const messages = [];
    const call = client[method](request, deadline(STREAM_MS));
    call.on("data", (m) => messages.push(m));
    call.on("error", reject);
    call.on("end", () => resolve(messages));
  });
}

// google.protobuf.Struct as proto-loader wants it: { fields: { name: Value } }. The
// well-known types come from protobufjs' own built-in definitions, whose field names are
// camelCase (`stringValue`) even with keepCase: true; snake_case keys (`string_value`)
// are silently dropped there, leaving an empty Value.
function struct(object) {
  const value = (v) => {
    if (v === null) return { nullValue: "NULL_VALUE" };
    if (typeof v === "number") return { numberValue: v };
    if (typeof v === "string") return { stringValue: v };
    if (typeof v === "boolean") return { boolValue: v };
    if (Array.isArray(v)) return { listValue: { values: v.map(value) } };
    return { structValue: struct(v) };
  };
  return { fields: Object.fromEntries(Object.entries(object).map(([k, v]) => [k, value(v)])) };
}

// SNAPSHOT, changes, FINAL; or, when the work was already done as the watch began (the
// simulator is fast and a busy machine slow), the FINAL alone.
function checkWatch(kinds, what) {
  assert.ok(kinds.length > 0, `${what} sent nothing`);
  if (kinds.length > 1) {
    assert.equal(kinds[0], "WATCH_EVENT_KIND_SNAPSHOT", `${what}'s first message: ${kinds}`);
  }
  assert.equal(kinds.at(-1), "WATCH_EVENT_KIND_FINAL", `${what}'s last message: ${kinds}`);
  assert.equal(kinds.filter((k) => k === "WATCH_EVENT_KIND_FINAL").length, 1, `${what} sent FINAL twice: ${kinds}`);
}

async function sutro(channelOptions, runId) {
  const jobs = new api.batchgate.sutro.v1.JobService(addr, grpc.credentials.createInsecure(), channelOptions);
  const request = {
    model: "gpt-oss-20b",
    prompts: { values: ["node prompt 1: say hi", "node prompt 2: say bye", "node prompt 3: count to 3"] },
    name: "node interop",
    request_id: `node-${runId}`, // snake_case works because of keepCase: true
  };
  const first = await unary(jobs, "CreateJob", request);
  assert.ok(first.job_id, `CreateJob returned no job_id: ${JSON.stringify(first)}`);
  ok("create-job", first.job_id);

  const again = await unary(jobs, "CreateJob", request);
  assert.equal(again.job_id, first.job_id, "the retried CreateJob (same request_id) made a second job");
  assert.equal(again.replayed, true, "the retried CreateJob is not marked replayed");
  ok("create-job-replayed", again.job_id);

  const messages = await stream(jobs, "WatchJob", { job_id: first.job_id });
  checkWatch(messages.map((m) => m.kind), "WatchJob");
  const final = messages.at(-1).progress;
  assert.equal(final.job_id, first.job_id);
  assert.equal(final.status, "JOB_STATUS_SUCCEEDED", `WatchJob ended with ${final.status} (${final.raw_status})`);
  ok("watch-job", `${messages.length} messages: ${messages.map((m) => m.kind).join(", ")}, ${final.status}`);
  jobs.close();
}

async function xai(channelOptions, runId) {
  const batches = new api.batchgate.xai.v1.BatchService(addr, grpc.credentials.createInsecure(), channelOptions);
  const batch = await unary(batches, "CreateBatch", { name: "node interop", request_id: `node-${runId}` });
  assert.ok(batch.batch_id, `CreateBatch returned no batch_id: ${JSON.stringify(batch)}`);
  assert.equal(batch.name, "node interop");
  ok("create-batch", batch.batch_id);

  const chat = (prompt) =>
    struct({ model: "grok-4", messages: [{ role: "user", content: prompt }], max_tokens: 32 });
  const sent = [
    { batch_request_id: "node-q1", chat_get_completion: chat("What is 2 + 2?") },
    { chat_get_completion: chat("Name a colour.") },
  ];
  const added = await unary(batches, "AddBatchRequests", { batch_id: batch.batch_id, batch_requests: sent });
  assert.equal(added.batch_request_ids.length, sent.length, `ids: ${added.batch_request_ids}`);
  assert.equal(added.batch_request_ids[0], "node-q1");
  ok("add-batch-requests", `${added.batch_request_ids.length} requests`);

  const messages = await stream(batches, "WatchBatch", { batch_id: batch.batch_id });
  checkWatch(messages.map((m) => m.kind), "WatchBatch");
  const last = messages.at(-1);
  assert.equal(last.done_reason, "DONE_REASON_COMPLETED", `WatchBatch ended with ${last.done_reason}`);
  assert.equal(Number(last.batch.state.num_requests), sent.length);
  assert.equal(Number(last.batch.state.num_pending), 0);
  ok("watch-batch", `${messages.length} messages: ${messages.map((m) => m.kind).join(", ")}, ${last.done_reason}`);
  batches.close();
}

async function main() {
  const runId = crypto.randomUUID().slice(0, 12);
  await sutro({}, runId);
  await xai({}, runId);
}

main().catch((error) => {
  console.error(`node client check failed: ${error.code !== undefined ? `gRPC ${error.code}: ${error.details}` : ""}`);
  console.error(error);
  process.exit(1);
});
