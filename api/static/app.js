// The robustify web page: jobs, a job's live progress, its report and downloads, and a form
// that starts a hardening job. It calls the /v1 API with the key kept in localStorage; the live
// events come as Server-Sent Events read with fetch(), since EventSource cannot send a header.
"use strict";

const KEY_STORAGE = "robustify.apiKey";
const TERMINAL = new Set(["succeeded", "failed", "cancelled"]);
const JOBS_REFRESH_MS = 2000;
const JOBS_SHOWN = 50;
const JOB_POLL_MS = 1000;
const REPORT_MIN_INTERVAL_MS = 3000;

const $ = (id) => document.getElementById(id);
let apiKey = localStorage.getItem(KEY_STORAGE) || "";
let jobsTimer = null;
let modelNames = new Map();
let view = null; // the open job: {id, job, abort, pollTimer, reportAt, reportTimer, reportUrl}

// -- the API ---------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

async function api(path, options = {}) {
  const headers = new Headers(options.headers || {});
  headers.set("Authorization", `Bearer ${apiKey}`);
  const response = await fetch(path, { ...options, headers });
  if (!response.ok) {
    let code = `http_${response.status}`;
    let message = response.statusText || code;
    let field = null;
    try {
      const body = await response.json();
      ({ code, message, field } = body.error);
    } catch (_) {
      // not the API's error shape (a proxy in between): keep the status line
    }
    throw new ApiError(response.status, code, message, field);
  }
  return response;
}

const getJson = async (path) => (await api(path)).json();

async function allPages(path, maxPages = 10) {
  const items = [];
  let cursor = null;
  for (let page = 0; page < maxPages; page += 1) {
    const sep = path.includes("?") ? "&" : "?";
    const url = cursor ? `${path}${sep}cursor=${encodeURIComponent(cursor)}` : path;
    const body = await getJson(url);
    items.push(...body.items);
    cursor = body.next_cursor;
    if (!cursor) break;
  }
  return items;
}

// -- small DOM helpers -----------------------------------------------------------------------

function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name === "className") node.className = value;
    else if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else node.setAttribute(name, value);
  }
  for (const child of children) {
    if (child !== null && child !== undefined) node.append(child);
  }
  return node;
}

let messageTimer = null;

function showMessage(text, kind = "error") {
  const box = $("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
  clearTimeout(messageTimer);
  if (text && kind === "info") messageTimer = setTimeout(() => showMessage(""), 4000);
}

function reportError(error) {
  if (error.name === "AbortError") return;
  if (error instanceof ApiError && error.status === 401) {
    showMessage(`The API key was refused: ${error.message}`);
    stopEverything();
    $("app").hidden = true;
    $("welcome").hidden = false;
    return;
  }
  const where = error.field ? ` (${error.field})` : "";
  showMessage(`${error.message}${where}`);
}

const percent = (value) =>
  typeof value === "number" && Number.isFinite(value) ? `${(value * 100).toFixed(1)}%` : "–";
const number = (value, digits = 3) =>
  typeof value === "number" && Number.isFinite(value) ? value.toPrecision(digits) : "–";
const when = (text) => (text ? new Date(text).toLocaleString() : "–");

function duration(seconds) {
  if (typeof seconds !== "number" || !Number.isFinite(seconds)) return "";
  if (seconds < 90) return `${Math.round(seconds)} s`;
  if (seconds < 5400) return `${Math.round(seconds / 60)} min`;
  return `${(seconds / 3600).toFixed(1)} h`;
}

function statusBadge(status) {
  return el("span", { className: `status ${status}` }, status);
}

function newIdempotencyKey() {
  if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
  return `${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}`;
}

// -- the key ---------------------------------------------------------------------------------

async function useKey(key) {
  apiKey = key.trim();
  if (!apiKey) return;
  try {
    await getJson("/v1/jobs?limit=1");
  } catch (error) {
    reportError(error);
    return;
  }
  localStorage.setItem(KEY_STORAGE, apiKey);
  $("api-key").value = "";
  $("api-key").placeholder = `${apiKey.slice(0, 8)}… (saved in this browser)`;
  showMessage("");
  $("welcome").hidden = true;
  $("app").hidden = false;
  await Promise.all([refreshJobs(), loadFormChoices()]);
  clearInterval(jobsTimer);
  jobsTimer = setInterval(() => refreshJobs().catch(reportError), JOBS_REFRESH_MS);
}

function forgetKey() {
  localStorage.removeItem(KEY_STORAGE);
  apiKey = "";
  stopEverything();
  $("api-key").placeholder = "rk_…";
  $("app").hidden = true;
  $("welcome").hidden = false;
  showMessage("");
}

function stopEverything() {
  clearInterval(jobsTimer);
  jobsTimer = null;
  closeJob();
}

// -- the list of jobs ------------------------------------------------------------------------

function progressCell(job) {
  if (job.status === "succeeded") return "100%";
  const fraction = job.progress && job.progress.fraction;
  const phase = job.progress && job.progress.phase ? job.progress.phase.replace(/_/g, " ") : "";
  if (TERMINAL.has(job.status)) return "–";
  return typeof fraction === "number" ? `${Math.round(fraction * 100)}%` : phase || "–";
}

async function refreshJobs() {
  const jobs = (await getJson(`/v1/jobs?limit=${JOBS_SHOWN}`)).items; // newest first
  const rows = jobs.map((job) =>
    el(
      "tr",
      {
        "data-job-id": job.id,
        className: view && view.id === job.id ? "selected" : "",
        onclick: () => openJob(job.id).catch(reportError),
      },
      el("td", {}, el("code", {}, job.id)),
      el("td", {}, job.kind),
      el("td", {}, modelNames.get(job.model_id) || job.model_id || "–"),
      el("td", {}, statusBadge(job.status)),
      el("td", { className: "job-progress" }, progressCell(job)),
      el("td", {}, when(job.created_at)),
    ),
  );
  $("jobs").tBodies[0].replaceChildren(...rows);
  $("no-jobs").hidden = jobs.length > 0;
}

// -- the form --------------------------------------------------------------------------------

async function loadFormChoices() {
  const [models, datasets] = await Promise.all([
    allPages("/v1/models?limit=100"),
    allPages("/v1/datasets?limit=100"),
  ]);
  modelNames = new Map(models.map((model) => [model.id, model.name]));
  const modelOptions = models.map((model) => {
    const shape = model.input_shape.join("×");
    const made = model.source_job_id ? ", hardened" : "";
    return el("option", { value: model.id }, `${model.name} (${shape}, ${model.num_classes} classes${made})`);
  });
  const chosen = $("model").value;
  $("model").replaceChildren(...modelOptions);
  if (modelNames.has(chosen)) $("model").value = chosen;
  $("start").disabled = models.length === 0;
  if (models.length === 0) $("model").append(el("option", { value: "" }, "no models uploaded yet"));
  const datasetOptions = datasets.map((dataset) => el("option", { value: dataset.id }, dataset.id));
  $("dataset").replaceChildren(...datasetOptions);
  if (datasets.some((dataset) => dataset.id === "builtin:digits")) $("dataset").value = "builtin:digits";
}

async function startJob(event) {
  event.preventDefault();
  const body = {
    kind: "harden",
    model_id: $("model").value,
    dataset: $("dataset").value,
    threat_model: { norm: $("norm").value, epsilon: Number($("epsilon").value) },
    hyperparameters: {
      epochs: Number($("epochs").value),
      batch_size: Number($("batch-size").value),
    },
    evaluation: {
      attack: $("eval-attack").value,
      max_samples: $("max-samples").value ? Number($("max-samples").value) : null,
      attack_steps: Number($("attack-steps").value),
    },
  };
  $("start").disabled = true;
  try {
    const response = await api("/v1/jobs", {
      method: "POST",
      headers: { "Content-Type": "application/json", "Idempotency-Key": newIdempotencyKey() },
      body: JSON.stringify(body),
    });
    const job = await response.json();
    showMessage(`Job ${job.id} queued.`, "info");
    await openJob(job.id);
    await refreshJobs();
  } catch (error) {
    reportError(error);
  } finally {
    $("start").disabled = false;
  }
}

// -- one job ---------------------------------------------------------------------------------

function closeJob() {
  if (!view) return;
  view.abort.abort();
  clearTimeout(view.pollTimer);
  clearTimeout(view.reportTimer);
  if (view.reportUrl) URL.revokeObjectURL(view.reportUrl);
  view = null;
}

async function openJob(id) {
  if (view && view.id === id) return;
  closeJob();
  view = { id, job: null, abort: new AbortController(), epochs: new Map(), reportAt: 0 };
  $("job").hidden = false;
  $("job-id").textContent = id;
  $("epoch-table").tBodies[0].replaceChildren();
  $("no-epochs").hidden = false;
  $("downloads").replaceChildren();
  $("report").removeAttribute("src");
  for (const row of $("jobs").tBodies[0].rows) row.classList.toggle("selected", row.dataset.jobId === id);
  await refreshJob(view);
  streamEvents(view).catch(reportError);
  refreshReport(view);
  refreshDownloads(view).catch(reportError);
}

async function refreshJob(current) {
  const job = await getJson(`/v1/jobs/${encodeURIComponent(current.id)}`);
  if (view !== current) return;
  const ended = current.job && !TERMINAL.has(current.job.status) && TERMINAL.has(job.status);
  current.job = job;
  renderJob(job);
  clearTimeout(current.pollTimer);
  if (!TERMINAL.has(job.status)) {
    // Events say when an epoch ends; the progress inside an epoch is read from the job.
    current.pollTimer = setTimeout(() => refreshJob(current).catch(reportError), JOB_POLL_MS);
  } else if (ended) {
    refreshReport(current, true);
    refreshDownloads(current).catch(reportError);
    refreshJobs().catch(reportError);
    loadFormChoices().catch(reportError); // a hardening job made a model
  }
}

function renderJob(job) {
  $("job-status").replaceWith(Object.assign(statusBadge(job.status), { id: "job-status" }));
  $("cancel").hidden = TERMINAL.has(job.status) || job.cancel_requested;
  const threat = job.threat_model || {};
  const facts = [
    ["kind", job.kind],
    ["model", modelNames.get(job.model_id) ? `${modelNames.get(job.model_id)} (${job.model_id})` : job.model_id || "–"],
    ["dataset", job.dataset],
    ["threat", `${threat.norm} epsilon ${threat.epsilon}`],
    ["epochs", job.kind === "harden" ? String(job.hyperparameters.epochs) : "–"],
    ["created", when(job.created_at)],
    ["finished", when(job.finished_at)],
  ];
  const metrics = job.metrics || {};
  // The verdict of a harden job (improved, clean_dropped, not_improved): "succeeded" alone
  // would also be said of a model that came back worse.
  if (metrics.verdict) facts.push(["verdict", metrics.verdict]);
  if (metrics.validation) {
    const source = metrics.validation.source === "uploaded" ? "uploaded" : "held out of train";
    facts.push(["validation", `${metrics.validation.size} images, ${source}`]);
  }
  $("job-facts").replaceChildren(...facts.flatMap(([name, value]) => [
    el("dt", {}, name),
    name === "verdict" ? el("dd", { id: "job-verdict", class: `verdict ${value}` }, value) : el("dd", {}, value),
  ]));

  const progress = job.progress || {};
  const fraction = job.status === "succeeded" ? 1 : Math.max(0, Math.min(1, progress.fraction || 0));
  $("progress-fill").style.width = `${(fraction * 100).toFixed(1)}%`;
  $("progress").setAttribute("aria-valuenow", String(Math.round(fraction * 100)));
  $("progress").dataset.fraction = String(fraction);
  $("progress").className = `progress ${job.status}`;
  const parts = [`${Math.round(fraction * 100)}%`];
  if (progress.phase) parts.push(progress.phase.replace(/_/g, " "));
  if (progress.epoch && progress.epochs) parts.push(`epoch ${progress.epoch} of ${progress.epochs}`);
  if (progress.step && progress.steps_per_epoch) parts.push(`step ${progress.step} of ${progress.steps_per_epoch}`);
  if (typeof progress.loss === "number") parts.push(`loss ${progress.loss.toFixed(3)}`);
  if (!TERMINAL.has(job.status) && progress.eta_seconds) parts.push(`about ${duration(progress.eta_seconds)} left`);
  if (job.status === "queued") parts.splice(0, parts.length, "queued: waiting for a worker");
  $("progress-text").textContent = parts.join(" · ");

  const best = job.metrics && job.metrics.best_epoch;
  for (const row of $("epoch-table").tBodies[0].rows) {
    row.classList.toggle("best", Number(row.dataset.epoch) === best);
  }

  const error = $("job-error");
  error.hidden = !job.error;
  error.textContent = job.error ? `${job.error.code}: ${job.error.message}` : "";
  renderEvaluation(job.kind, metrics.before, metrics.after);
}

// -- the before/after evaluation, each accuracy with its 95% interval ------------------------

const Z_95 = 1.959963984540054;

// The Wilson score interval, for reports stored before the service kept one (the same formula
// as the service's): centered at (p + z²/2n) / (1 + z²/n), not at p.
function wilsonInterval(p, n) {
  if (!(n > 0)) return null;
  const z2 = Z_95 * Z_95;
  const center = (p + z2 / (2 * n)) / (1 + z2 / n);
  const half = (Z_95 * Math.sqrt((p * (1 - p)) / n + z2 / (4 * n * n))) / (1 + z2 / n);
  return [Math.max(0, center - half), Math.min(1, center + half)];
}

function intervalOf(report, name) {
  const stored = (report.confidence_intervals || {})[name];
  if (Array.isArray(stored) && stored.length === 2) return stored;
  const value = report[name];
  return typeof value === "number" ? wilsonInterval(value, report.num_samples) : null;
}

function measured(report, name) {
  if (!report) return "";
  const value = report[name];
  const bounds = typeof value === "number" ? intervalOf(report, name) : null;
  if (!bounds) return percent(value);
  const [low, high] = bounds.map((bound) => (bound * 100).toFixed(1));
  return `${percent(value)} [${low}–${high}]`;
}

function headlineAttacks(report) {
  let names = (report.stages || []).map((stage) => stage.name);
  if (names.length === 0) {
    names = [`PGD-${report.attack_steps}`]; // no stages stored: the preset's (older jobs: PGD alone)
    if (report.attack === "standard") names.push("APGD-CE", "APGD-T");
    if (report.attack === "autoattack") names.push("AutoAttack");
  }
  return names.length === 1 ? names[0] : `worst of ${names.join(", ")}`;
}

function renderEvaluation(kind, before, after) {
  const shown = after || before;
  $("evaluation").hidden = !shown;
  if (!shown) return;
  const steps = shown.attack_steps;
  const epsilon = (shown.threat || {}).epsilon;
  const rows = [["clean", "clean_accuracy"]];
  if (!shown.attack || shown.attack === "fast") {
    rows.push([`robust: PGD-${steps} (eps ${epsilon})`, "robust_accuracy"]);
  } else {
    rows.push([`PGD-${steps} alone (eps ${epsilon})`, "pgd_accuracy"]);
    rows.push([`robust: ${headlineAttacks(shown)} (eps ${epsilon})`, "robust_accuracy"]);
  }
  $("accuracy-table").tHead.querySelector(".before").textContent = kind === "evaluate" ? "model" : "before";
  $("accuracy-table").tHead.querySelector(".after").hidden = !after;
  $("accuracy-table").tBodies[0].replaceChildren(...rows.map(([label, name]) => el(
    "tr",
    { "data-metric": name },
    el("th", { scope: "row" }, label),
    el("td", {}, measured(before, name)),
    after ? el("td", {}, measured(after, name)) : null,
  )));
  const count = typeof shown.num_samples === "number" ? shown.num_samples.toLocaleString("en") : "?";
  const same = kind === "evaluate" ? "" : " the same";
  $("evaluation-note").textContent =
    `On${same} ${count} test images; in brackets, each accuracy's 95% confidence interval ` +
    "(Wilson). Robust accuracy is an upper bound: a stronger attack may fool more.";
}

// Server-Sent Events over fetch(): "field: value" lines, events separated by a blank line.
async function streamEvents(current) {
  let lastId = 0;
  while (view === current) {
    try {
      const response = await api(`/v1/jobs/${encodeURIComponent(current.id)}/events?after=${lastId}`, {
        headers: { Accept: "text/event-stream" },
        signal: current.abort.signal,
      });
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value.replace(/\r\n?/g, "\n");
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          const event = parseEvent(block);
          if (event.id) lastId = Number(event.id);
          if (event.data) onEvent(current, event.type, JSON.parse(event.data));
        }
      }
      // The server ends the stream once the job has ended.
      if (!current.job || TERMINAL.has(current.job.status)) return;
      await refreshJob(current);
      if (TERMINAL.has(current.job.status)) return;
    } catch (error) {
      if (error.name === "AbortError") return;
      if (error instanceof ApiError) throw error;
    }
    await new Promise((resolve) => setTimeout(resolve, 2000)); // the network dropped: retry
  }
}

function parseEvent(block) {
  const event = { type: "message", data: "", id: null };
  for (const line of block.split("\n")) {
    if (!line || line.startsWith(":")) continue;
    const colon = line.indexOf(":");
    const field = colon < 0 ? line : line.slice(0, colon);
    const value = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
    if (field === "event") event.type = value;
    else if (field === "data") event.data += (event.data ? "\n" : "") + value;
    else if (field === "id") event.id = value;
  }
  return event;
}

function onEvent(current, type, event) {
  if (view !== current) return;
  if (type === "epoch") {
    addEpoch(current, event.data);
    refreshReport(current);
    refreshDownloads(current).catch(reportError);
  } else if (type === "evaluated") {
    refreshReport(current);
  }
  if (TERMINAL.has(type) || type === "started" || type === "cancel_requested") {
    refreshJob(current).catch(reportError);
  }
}

function addEpoch(current, metrics) {
  if (current.epochs.has(metrics.epoch)) return;
  const row = el(
    "tr",
    { "data-epoch": String(metrics.epoch) },
    el("td", {}, String(metrics.epoch)),
    el("td", {}, number(metrics.train_loss, 4)),
    el("td", {}, number(metrics.lr, 3)),
    el("td", {}, percent(metrics.val_clean_accuracy)),
    el("td", {}, percent(metrics.val_robust_accuracy)),
    el("td", {}, number(metrics.seconds, 2)),
  );
  current.epochs.set(metrics.epoch, row);
  const ordered = [...current.epochs.entries()].sort((a, b) => a[0] - b[0]).map(([, tr]) => tr);
  $("epoch-table").tBodies[0].replaceChildren(...ordered);
  $("no-epochs").hidden = true;
}

// The report, fetched with the key and shown from a blob: URL; at most one fetch every few
// seconds while the job runs (each one renders its plots on the server).
function refreshReport(current, now = false) {
  clearTimeout(current.reportTimer);
  const wait = now ? 0 : Math.max(0, current.reportAt + REPORT_MIN_INTERVAL_MS - Date.now());
  current.reportTimer = setTimeout(() => loadReport(current).catch(reportError), wait);
}

async function loadReport(current) {
  current.reportAt = Date.now();
  const response = await api(`/v1/jobs/${encodeURIComponent(current.id)}/report`, {
    signal: current.abort.signal,
  });
  const blob = new Blob([await response.text()], { type: "text/html" });
  if (view !== current) return;
  const frame = $("report");
  const previous = current.reportUrl;
  current.reportUrl = URL.createObjectURL(blob);
  frame.onload = () => {
    if (previous) URL.revokeObjectURL(previous);
    const page = frame.contentDocument && frame.contentDocument.documentElement;
    if (page) frame.style.height = `${page.scrollHeight + 16}px`;
  };
  frame.src = current.reportUrl;
}

async function refreshDownloads(current) {
  const id = encodeURIComponent(current.id);
  const checkpoints = await allPages(`/v1/jobs/${id}/checkpoints?limit=100`);
  if (view !== current) return;
  const job = current.job || {};
  const links = [];
  if (job.result_model_id) {
    links.push(
      downloadLink(`/v1/models/${job.result_model_id}/content`, "hardened model", `${job.result_model_id}.model`, "result-model"),
    );
  }
  links.push(downloadLink(`/v1/jobs/${id}/report`, "report (HTML)", `${current.id}-report.html`, "report-file"));
  for (const checkpoint of checkpoints) {
    const robust = percent(checkpoint.metrics.val_robust_accuracy);
    links.push(
      downloadLink(checkpoint.content_url, `epoch ${checkpoint.epoch} weights (val robust ${robust})`,
        `${current.id}-epoch-${checkpoint.epoch}.model`, `checkpoint-${checkpoint.epoch}`),
    );
  }
  $("downloads").replaceChildren(...links.map((link) => el("li", {}, link)));
}

function downloadLink(path, label, fallbackName, name) {
  return el("a", { href: "#", "data-download": name, onclick: (event) => {
    event.preventDefault();
    download(path, fallbackName).catch(reportError);
  } }, label);
}

async function download(path, fallbackName) {
  const response = await api(path);
  const disposition = response.headers.get("Content-Disposition") || "";
  const match = /filename="?([^";]+)"?/.exec(disposition);
  const url = URL.createObjectURL(await response.blob());
  const link = el("a", { href: url, download: match ? match[1] : fallbackName });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

async function cancelJob() {
  if (!view) return;
  const current = view;
  await api(`/v1/jobs/${encodeURIComponent(current.id)}/cancel`, { method: "POST" });
  await refreshJob(current);
}

// -- start -----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("key-form").addEventListener("submit", (event) => {
    event.preventDefault();
    useKey($("api-key").value).catch(reportError);
  });
  $("forget-key").addEventListener("click", forgetKey);
  $("harden-form").addEventListener("submit", startJob);
  $("cancel").addEventListener("click", () => cancelJob().catch(reportError));
  if (apiKey) useKey(apiKey).catch(reportError);
});
