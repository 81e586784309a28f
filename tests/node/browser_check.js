// The browser check of tests/adoption/browser.rs: a real headless Chromium opens a page
// served from one origin that calls the gateway, on another origin, with gRPC-Web.
//
// 1. Generates the Sutro client from proto/ (buf generate with protoc-gen-es, both pinned
//    in package-lock.json) and bundles tests/node/browser_page.js with esbuild, into
//    BATCHGATE_BROWSER_BUILD (index.html and bundle.js; the Rust test serves that folder).
// 2. Launches Debian's chromium (BATCHGATE_CHROMIUM, default /usr/bin/chromium) through
//    playwright-core, with a fresh profile, and opens the page once per gateway in
//    BATCHGATE_GATEWAYS (comma-separated `name=http://host:port`), BATCHGATE_PAGE_URL
//    being the page's own address and BATCHGATE_KEY the key the page sends.
// 3. Prints one `result <name> <json>` line per gateway: the page's outcome, plus
//    `corsBlocked` (whether Chromium logged a CORS refusal).
// BATCHGATE_BROWSER_SCREENSHOTS=1 also saves `<name>.png` of each page in the build folder.
// Everything is bounded in time; Chromium is closed on every way out.
"use strict";

const path = require("node:path");
const fs = require("node:fs");
const { execFileSync } = require("node:child_process");
const assert = require("node:assert/strict");

const here = __dirname;
const repo = path.resolve(here, "..", "..");
const build = process.env.BATCHGATE_BROWSER_BUILD;
const pageUrl = process.env.BATCHGATE_PAGE_URL;
const gateways = (process.env.BATCHGATE_GATEWAYS ?? "").split(",").filter(Boolean).map((g) => g.split("="));
const key = process.env.BATCHGATE_KEY;
const chromiumPath = process.env.BATCHGATE_CHROMIUM || "/usr/bin/chromium";
assert.ok(build && pageUrl && gateways.length && key, "set BATCHGATE_BROWSER_BUILD, BATCHGATE_PAGE_URL, BATCHGATE_GATEWAYS and BATCHGATE_KEY");

const WHOLE_MS = 50_000; // the whole check, below the Rust test's own limit
const PAGE_MS = 35_000; // one page, to its result

// Without the background-networking flags Chromium keeps calling out to the network,
// which this machine does not have; QUIC would only add retries.
const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

function generateAndBundle() {
  const gen = path.join(build, "gen");
  fs.rmSync(gen, { recursive: true, force: true });
  fs.mkdirSync(gen, { recursive: true });
  const template = {
    version: "v2",
    plugins: [
      { local: path.join(here, "node_modules", ".bin", "protoc-gen-es"), out: gen, opt: ["target=js"] },
    ],
  };
  execFileSync(
    path.join(here, "node_modules", ".bin", "buf"),
    ["generate", "--template", JSON.stringify(template), "--path", "proto/batchgate/sutro/v1/jobs.proto"],
    { cwd: repo, stdio: ["ignore", "inherit", "inherit"], timeout: 60_000 },
  );
  require("esbuild").buildSync({
    entryPoints: [path.join(here, "browser_page.js")],
    bundle: true,
    format: "esm",
    target: "chrome120",
    outfile: path.join(build, "bundle.js"),
    alias: { "batchgate-sutro-jobs": path.join(gen, "batchgate", "sutro", "v1", "jobs_pb.js") },
    // The generated code lives outside tests/node; its imports resolve to the pinned packages.
    nodePaths: [path.join(here, "node_modules")],
    logLevel: "warning",
  });
  fs.writeFileSync(
    path.join(build, "index.html"),
    '<!doctype html>\n<meta charset="utf-8">\n<title>batchgate browser check</title>\n' +
      '<pre id="result">running</pre>\n<script type="module" src="bundle.js"></script>\n',
  );
}

async function openPage(browser, name, gateway) {
  const context = await browser.newContext();
  const page = await context.newPage();
  const console_ = [];
  page.on("console", (m) => console_.push(m.text()));
  page.on("pageerror", (e) => console_.push(`page error: ${e.message}`));
  try {
    const url = `${pageUrl}?gateway=${encodeURIComponent(gateway)}&key=${encodeURIComponent(key)}`;
    await page.goto(url, { timeout: PAGE_MS });
    const handle = await page.waitForFunction(() => window.batchgateResult, null, { timeout: PAGE_MS });
    const result = await handle.jsonValue();
    result.corsBlocked = console_.some((line) => line.includes("blocked by CORS policy"));
    if (process.env.BATCHGATE_BROWSER_SCREENSHOTS) {
      await page.screenshot({ path: path.join(build, `${name}.png`) });
    }
    console.log(`result ${name} ${JSON.stringify(result)}`);
  } catch (error) {
    throw new Error(`${name}: ${error.message}\nthe page's console:\n${console_.join("\n")}`);
  } finally {
    await context.close();
  }
}

async function main() {
  let playwright;
  try {
    playwright = require("playwright-core");
  } catch {
    throw new Error("playwright-core is missing: run `bash tests/node/setup.sh`");
  }
  assert.ok(fs.existsSync(chromiumPath), `${chromiumPath} is missing: run \`bash tests/node/setup.sh\` (it installs Debian's chromium)`);
  generateAndBundle();
  // launch() gives Chromium a fresh temporary profile, removed when it closes.
  const browser = await playwright.chromium.launch({
    executablePath: chromiumPath,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
  try {
    for (const [name, gateway] of gateways) {
      await openPage(browser, name, gateway);
    }
  } finally {
    await browser.close();
  }
}

const watchdog = setTimeout(() => {
  console.error(`browser check: no result within ${WHOLE_MS} ms`);
  process.exit(2); // playwright-core kills the Chromium it launched when Node exits
}, WHOLE_MS);

main().then(
  () => clearTimeout(watchdog),
  (error) => {
    console.error(`browser check failed: ${error.stack ?? error}`);
    process.exit(1);
  },
);
