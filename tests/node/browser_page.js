// The page of the browser check (tests/node/browser_check.js bundles it with esbuild):
// a Connect-ES gRPC-Web client, generated from proto/ by protoc-gen-es, calls the gateway
// from the page's own origin. Sutro CreateJob, then WatchJob until its FINAL.
//
// Query: `gateway` (the gateway's base URL, another origin) and `key` (sent as
// `authorization: Key <key>` metadata). The outcome goes to `window.batchgateResult`
// (and the page's text), as `{ ok: true, ... }` or `{ ok: false, code, message }`.
import { ConnectError, createClient } from "@connectrpc/connect";
import { createGrpcWebTransport } from "@connectrpc/connect-web";
// esbuild's alias for the generated batchgate/sutro/v1/jobs_pb.js
import { JobService, JobStatus, WatchEventKind } from "batchgate-sutro-jobs";

const CALL_MS = 10_000;
const STREAM_MS = 30_000;

async function check() {
  const params = new URLSearchParams(location.search);
  const transport = createGrpcWebTransport({ baseUrl: params.get("gateway"), useBinaryFormat: true });
  const jobs = createClient(JobService, transport);
  const headers = { authorization: `Key ${params.get("key")}` };

  // Not a header browsers show other origins' pages: readable only if the gateway exposes it.
  let rateLimit = null;
  const created = await jobs.createJob(
    {
      model: "gpt-oss-20b",
      inputs: { case: "prompts", value: { values: ["page prompt 1: say hi", "page prompt 2: say bye", "page prompt 3: count to 3"] } },
      name: "browser check",
    },
    { headers, timeoutMs: CALL_MS, onHeader: (h) => (rateLimit = h.get("x-ratelimit-limit")) },
  );

  const kinds = [];
  let final = null;
  for await (const message of jobs.watchJob({ jobId: created.jobId }, { headers, timeoutMs: STREAM_MS })) {
    kinds.push(WatchEventKind[message.kind]);
    if (message.kind === WatchEventKind.FINAL) final = message.progress;
  }
  return {
    ok: true,
    origin: location.origin,
    jobId: created.jobId,
    events: kinds.length,
    progressEvents: kinds.filter((k) => k === "PROGRESS").length,
    kinds,
    finalJobId: final?.jobId ?? null,
    finalStatus: final ? JobStatus[final.status] : null,
    rateLimit,
  };
}

function report(result) {
  window.batchgateResult = result;
  document.getElementById("result").textContent = JSON.stringify(result, null, 2);
}

check().then(report, (error) => {
  const e = ConnectError.from(error);
  report({ ok: false, origin: location.origin, code: e.code, message: e.message });
});
