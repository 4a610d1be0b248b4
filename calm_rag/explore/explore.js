// The calm_rag run explorer. Every text goes on the page through textContent (see el()):
// nothing from the data is ever parsed as markup. A question's detail is parsed and drawn
// only when it is opened; the questions table draws one page of rows at a time.
"use strict";

const DATA = JSON.parse(document.getElementById("explore-data").textContent);
const PAGE_SIZE = 100;
const FLAGS = ["disagree", "changed", "helped", "hurt", "fallback"];
const state = {set: Object.keys(DATA.sets)[0], split: "", setting: "", sort: null, page: 0,
               open: null};
const parsed = new Map();  // question id -> its parsed detail, for the current set
let lines = null;  // the current set's details: its block's text, line starts, id -> line

function $(id) { return document.getElementById(id); }

// An element with attributes and children; a string child becomes a text node.
function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (key === "text") node.textContent = value;
    else if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(typeof child === "string" ? document.createTextNode(child) : child);
  }
  return node;
}

function pct(value) { return value === null || value === undefined ? "n/a" : (100 * value).toFixed(1); }
function answer(value) { return value === null || value === undefined ? "—" : value; }
function current() { return DATA.sets[state.set]; }
function phases(entry) { return Object.keys(entry.consistency[state.setting] || {}); }

function options(select, values, labels) {
  select.replaceChildren(...values.map((v, i) => el("option", {value: v, text: labels[i]})));
}

function setUp() {
  $("title").textContent = DATA.title;
  const sets = Object.keys(DATA.sets);
  if (sets.length > 1) {
    $("set-label").hidden = false;
    options($("set"), sets, sets);
    $("set").addEventListener("change", () => { state.set = $("set").value; loadSet(); });
  }
  $("split").addEventListener("change", () => { state.split = $("split").value; relist(); });
  $("setting").addEventListener("change", () => {
    state.setting = $("setting").value; relist(); if (state.open) showQuestion(state.open);
  });
  for (const flag of FLAGS) $("f-" + flag).addEventListener("change", relist);
  $("sort-before").addEventListener("click", () => sortBy("first"));
  $("sort-after").addEventListener("click", () => sortBy("last"));
  $("prev").addEventListener("click", () => { state.page -= 1; renderList(); });
  $("next").addEventListener("click", () => { state.page += 1; renderList(); });
  loadSet();
}

function loadSet() {
  const run = current();
  parsed.clear();
  lines = null;
  state.open = null;
  $("detail").replaceChildren();
  const h = run.header;
  const weights = Object.entries(h.weights || {}).map(([k, v]) => `${k} ${v}`).join(", ");
  $("run-line").textContent = [`experiment ${h.experiment}`, `folder ${h.folder}`,
    `created ${h.created}`, `languages ${(h.languages || []).join(", ")}`,
    `vote ${h.policy} (ties: ${h.tie}${weights ? "; weights " + weights : ""})`].join(" · ");
  const splits = [...new Set(run.index.map((q) => q.split))];
  options($("split"), ["", ...splits], ["all", ...splits]);
  const settings = [...new Set(run.index.flatMap((q) => Object.keys(q.flags)))];
  options($("setting"), settings, settings);
  state.split = "";
  state.setting = settings[0] || "";
  $("plot-list").replaceChildren(...run.plots.map((p) =>
    el("figure", {}, el("img", {src: p.src, alt: p.name}), el("figcaption", {text: p.name}))));
  relist();
}

function consistencyOf(entry, which) {
  const names = phases(entry);
  if (!names.length) return null;
  const value = entry.consistency[state.setting][which === "first" ? names[0] : names[names.length - 1]];
  return value === undefined ? null : value;
}

function visible() {
  const wanted = FLAGS.filter((f) => $("f-" + f).checked);
  let rows = current().index.filter((q) =>
    (!state.split || q.split === state.split)
    && wanted.every((f) => (q.flags[state.setting] || []).includes(f)));
  if (state.sort) {
    const {key, dir} = state.sort;
    // Questions without a value (fewer than two languages answered) go last either way.
    rows = rows.slice().sort((a, b) => {
      const x = consistencyOf(a, key), y = consistencyOf(b, key);
      if (x === null || y === null) return (x === null) - (y === null);
      return dir * (x - y);
    });
  }
  return rows;
}

function sortBy(key) {
  const dir = state.sort && state.sort.key === key ? -state.sort.dir : 1;
  state.sort = {key, dir};
  relist();
}

function relist() { state.page = 0; renderList(); }

function renderList() {
  const rows = visible();
  const pages = Math.max(1, Math.ceil(rows.length / PAGE_SIZE));
  state.page = Math.min(Math.max(state.page, 0), pages - 1);
  const shown = rows.slice(state.page * PAGE_SIZE, (state.page + 1) * PAGE_SIZE);
  $("count").textContent = `${rows.length} of ${current().index.length} questions`;
  $("page").textContent = `page ${state.page + 1} of ${pages}`;
  $("prev").disabled = state.page === 0;
  $("next").disabled = state.page >= pages - 1;
  $("rows").replaceChildren(...shown.map((q) => el("tr",
    {"data-qid": q.id, class: q.id === state.open ? "open" : "",
     onclick: () => showQuestion(q.id)},
    el("td", {text: q.id}), el("td", {text: q.split}), el("td", {text: q.stem}),
    el("td", {class: "num", text: pct(consistencyOf(q, "first"))}),
    el("td", {class: "num", text: pct(consistencyOf(q, "last"))}),
    el("td", {text: (q.flags[state.setting] || []).join(", ")}))));
}

// The details block is read and split into lines on the first question opened; only that
// question's line is parsed.
function detailLines() {
  const text = document.getElementById(current().block).textContent;
  const starts = [0];
  for (let at = text.indexOf("\n"); at !== -1; at = text.indexOf("\n", at + 1)) starts.push(at + 1);
  const line = new Map(current().index.map((q, i) => [q.id, i]));
  return {text, starts, line};
}

function detailOf(qid) {
  if (!parsed.has(qid)) {
    lines = lines || detailLines();
    const i = lines.line.get(qid);
    const end = i + 1 < lines.starts.length ? lines.starts[i + 1] - 1 : lines.text.length;
    parsed.set(qid, JSON.parse(lines.text.slice(lines.starts[i], end)));
  }
  return parsed.get(qid);
}

function showQuestion(qid) {
  state.open = qid;
  for (const row of $("rows").children) row.classList.toggle("open", row.dataset.qid === qid);
  const d = detailOf(qid);
  $("detail").replaceChildren(
    el("h2", {id: "q-title", text: `${d.id} (${d.split})`}),
    el("p", {id: "q-gold", text: `gold: ${answer(d.gold)}`}),
    questionsSection(d), evalSection(d), voteSection(d), samplesSection(d),
    retrievedSection(d), pairsSection(d));
}

function section(title, ...children) {
  return el("section", {class: "part"}, el("h3", {text: title}), ...children);
}

function questionsSection(d) {
  return section("The question in each language", ...Object.entries(d.questions).map(
    ([lang, q]) => el("div", {class: "question", "data-lang": lang},
      el("h4", {text: lang}), el("p", {class: "stem", text: q.stem}),
      el("ol", {class: "options"}, ...Object.entries(q.options).map(([label, text]) =>
        el("li", {class: label === d.gold ? "gold" : "", text: `${label}. ${text}`}))))));
}

function majority(rows) {
  const counts = new Map();
  for (const r of rows) if (r.a !== null) counts.set(r.a, (counts.get(r.a) || 0) + 1);
  let best = null;
  for (const [a, n] of counts) if (best === null || n > counts.get(best)) best = a;
  return best;
}

function evalSection(d) {
  const cells = Object.keys(d.eval);
  const langs = [...new Set(cells.flatMap((c) => Object.keys(d.eval[c][state.setting] || {})))];
  const head = el("tr", {}, el("th", {text: "language"}),
    ...cells.map((c) => el("th", {text: c})));
  const body = langs.map((lang) => el("tr", {}, el("th", {text: lang}), ...cells.map((c) => {
    const rows = ((d.eval[c][state.setting] || {})[lang]) || [];
    const a = majority(rows);
    const mark = a === null ? "unanswered" : d.gold === null ? "" : a === d.gold ? "right" : "wrong";
    return el("td", {"data-lang": lang, "data-cell": c, class: mark}, answer(a),
      ...rows.map((r) => el("details", {}, el("summary", {text: `sample ${r.i}: ${r.x}`}),
        el("pre", {text: r.t}))));
  })));
  return section(`Answers before and after alignment (${state.setting})`,
    el("table", {id: "eval-table"}, el("thead", {}, head), el("tbody", {}, ...body)));
}

function voteSection(d) {
  const v = d.votes[state.setting];
  if (!v) return section("Vote", el("p", {text: "no vote on this question in this setting (not a training question)"}));
  const h = current().header;
  const langs = Object.keys(v.by_language);
  const letters = Object.keys(v.counts);
  return section("Vote",
    el("p", {id: "vote-line", text: `target ${answer(v.answer)} · ${v.status} · ` +
      `${v.n_parsed} of ${v.n_responses} responses parsed · policy ${h.policy}, ties ${h.tie}`}),
    el("table", {id: "vote-table"},
      el("thead", {}, el("tr", {}, el("th", {text: "language"}),
        ...letters.map((a) => el("th", {text: a})))),
      el("tbody", {}, ...langs.map((lang) => el("tr", {}, el("th", {text: lang}),
        ...letters.map((a) => el("td", {class: "num", text: String(v.by_language[lang][a] || 0)})))),
        el("tr", {}, el("th", {text: "all"}),
          ...letters.map((a) => el("td", {class: "num", text: String(v.counts[a])}))))));
}

function samplesSection(d) {
  const by = d.alignment[state.setting] || {};
  return section("Sampled answers (alignment)", ...Object.entries(by).map(([lang, rows]) =>
    el("details", {class: "samples", "data-lang": lang},
      el("summary", {text: `${lang}: ${rows.map((r) => answer(r.a)).join(" ")}`}),
      ...rows.map((r) => el("div", {class: "sample"},
        el("p", {text: `sample ${r.i} · answer ${answer(r.a)} · ${r.x}`}),
        el("pre", {text: r.t}))))));
}

function retrievedSection(d) {
  const langs = Object.keys(d.retrieved);
  if (!langs.length) return section("Retrieved passages", el("p", {text: "no retrieval in this run"}));
  return section("Retrieved passages", ...langs.map((lang) => el("details",
    {class: "passages", "data-lang": lang},
    el("summary", {text: `query in ${lang}: ${d.retrieved[lang].length} passage(s)`}),
    el("table", {}, el("thead", {}, el("tr", {}, ...["rank", "score", "language", "document",
      "title", "text"].map((t) => el("th", {text: t})))),
      el("tbody", {}, ...d.retrieved[lang].map((hit) => el("tr", {},
        el("td", {class: "num", text: String(hit.rank)}),
        el("td", {class: "num", text: typeof hit.score === "number" ? hit.score.toFixed(3) : "n/a"}),
        el("td", {text: String(hit.lang)}), el("td", {text: String(hit.doc_id)}),
        el("td", {text: String(hit.title || "")}), el("td", {class: "passage", text: String(hit.text)}))))))));
}

function pairsSection(d) {
  const pairs = d.pairs.filter((p) => p.setting === state.setting);
  if (!pairs.length) return section("Preference pairs", el("p", {text: "no pairs from this question in this setting"}));
  return section(`Preference pairs (${pairs.length})`, ...pairs.map((p) => el("details",
    {class: "pair", "data-lang": p.lang},
    el("summary", {text: `${p.lang}: chosen ${p.chosen_answer} over ${answer(p.rejected_answer)} ` +
      `(${p.source}, target ${p.target})`}),
    el("p", {text: `chosen (${p.chosen_id})`}), el("pre", {text: p.chosen}),
    el("p", {text: `rejected (${p.rejected_id})`}), el("pre", {text: p.rejected}))));
}

setUp();
