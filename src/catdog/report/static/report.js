// catdog report: gallery, filters, sorting and the per-image view.
// Data comes from the JSON block above; every string from it is written with textContent (never
// innerHTML), so file and class names can never become markup.
"use strict";
(function () {
  const data = JSON.parse(document.getElementById("report-data").textContent);
  const labels = data.experiments;
  const many = labels.length > 1;
  const PAGE = 60;
  const THUMB_HEIGHT = 240;
  // An explain report opens on its mistakes, highest loss first: what a reader came for. compare opens on
  // the images whose maps differ most.
  const anyMistake = data.images.some((img) => img.runs.some((r) => r.correct === false));
  const state = {
    exp: "all", outcome: !many && anyMistake ? "incorrect" : "all", truth: "any", pred: "any",
    sort: many ? "disagreement" : anyMistake ? "loss-desc" : "confidence-desc", shown: PAGE, query: "",
  };
  let visible = [];
  let current = -1;

  function el(tag, attrs, children) {
    const node = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (key === "text") node.textContent = value;
      else if (key === "class") node.className = value;
      else node.setAttribute(key, value);
    }
    for (const child of children || []) node.append(child);
    return node;
  }

  const pct = (p) => (p === null || p === undefined ? "–" : (100 * p).toFixed(1) + "%");
  const num = (x) => (x === null || x === undefined ? "–" : x.toFixed(2));
  const runsOf = (img) => (state.exp === "all" ? img.runs : [img.runs[Number(state.exp)]]);
  const mean = (xs) => { const ok = xs.filter((x) => x !== null && x !== undefined); return ok.length ? ok.reduce((a, b) => a + b, 0) / ok.length : null; };

  // ---- controls --------------------------------------------------------------------------
  function select(label, key, options) {
    const node = el("select", { "aria-label": label, id: "filter-" + key });
    for (const [value, text] of options) node.append(el("option", { value: value, text: text }));
    node.value = state[key];
    node.addEventListener("change", () => { state[key] = node.value; state.shown = PAGE; render(); });
    return el("label", {}, [label, node]);
  }
  // Class values carry a prefix: a class may be called "any" (the no-filter value) or anything else.
  const classOptions = [["any", "all classes"]].concat(data.classes.map((c) => ["c:" + c, c]));
  const controls = document.getElementById("controls");
  document.getElementById("gallery").style.setProperty("--experiments", String(labels.length));
  if (many) controls.append(select("Experiment", "exp", [["all", "all experiments"]].concat(labels.map((l, i) => [String(i), l]))));
  const outcomes = [["all", "all images"], ["correct", "correct"], ["incorrect", "incorrect"]];
  if (many) outcomes.push(["flipped", "flipped (experiments disagree)"]);
  const has = (key) => data.images.some((img) => img.runs.some((r) => r[key] !== null && r[key] !== undefined));
  if (has("in_box")) outcomes.push(["wrong-reason", "right for the wrong reason (correct, map misses the object)"], ["on-object", "map on the object"]);
  controls.append(select("Show", "outcome", outcomes));
  controls.append(select("True class", "truth", classOptions));
  controls.append(select("Predicted class", "pred", classOptions));
  const sorts = [["confidence-desc", "confidence, high to low"], ["confidence-asc", "confidence, low to high"], ["loss-desc", "loss, high to low"], ["name", "file name"]];
  if (many) sorts.unshift(["disagreement", "CAM disagreement, most first"]);
  if (has("energy_in_box")) sorts.push(["energy-asc", "energy on the object, low to high"]);
  if (has("deletion_auc")) sorts.push(["deletion-desc", "deletion AUC, high (least faithful) first"]);
  if (has("insertion_auc")) sorts.push(["insertion-asc", "insertion AUC, low (least faithful) first"]);
  if (has("sanity_rank_corr")) sorts.push(["sanity-desc", "similarity to a random model's map, high first"]);
  controls.append(select("Sort by", "sort", sorts));
  const search = el("input", { type: "search", id: "search", placeholder: "part of a file name", "aria-label": "Search file names" });
  search.addEventListener("input", () => { state.query = search.value.trim().toLowerCase(); state.shown = PAGE; render(); });
  controls.append(el("label", {}, ["Search", search]));
  // The heatmap is a layer over the photo (both text-free): hide it, or change its opacity.
  // One setting for the gallery and the image view: each has its own pair of inputs, kept in step.
  const view = { heat: true, opacity: 50 };
  function heatControls(suffix) {
    const on = el("input", { type: "checkbox", id: "toggle-heat" + suffix, class: "heat-toggle" });
    on.checked = view.heat;
    on.addEventListener("change", () => { view.heat = on.checked; applyView(); });
    const slider = el("input", { type: "range", id: "opacity" + suffix, class: "heat-opacity", min: "0", max: "100", value: String(view.opacity), "aria-label": "Heatmap opacity" });
    slider.addEventListener("input", () => { view.opacity = Number(slider.value); applyView(); });
    return [el("label", { class: "inline" }, [on, "Heatmap"]), el("label", {}, ["Heatmap opacity", slider])];
  }
  function applyView() {
    document.body.classList.toggle("photo-only", !view.heat);
    document.documentElement.style.setProperty("--heat-opacity", String(view.opacity / 100));
    document.querySelectorAll(".heat-toggle").forEach((node) => { node.checked = view.heat; });
    document.querySelectorAll(".heat-opacity").forEach((node) => { node.value = String(view.opacity); });
  }
  controls.append(...heatControls(""));
  document.querySelectorAll("button.confused").forEach((button) => button.addEventListener("click", () => {
    // A most-confused pair: only its mistakes, in that experiment.
    Object.assign(state, { outcome: "incorrect", truth: "c:" + button.dataset.true, pred: "c:" + button.dataset.pred, shown: PAGE });
    if (many) state.exp = button.dataset.exp;
    for (const key of ["outcome", "truth", "pred", "exp"]) { const node = document.getElementById("filter-" + key); if (node) node.value = state[key]; }
    render();
    document.getElementById("gallery-section").scrollIntoView();
  }));

  // ---- filtering and sorting -------------------------------------------------------------
  function keep(img) {
    const runs = runsOf(img);
    if (state.outcome === "correct" && !runs.every((r) => r.correct === true)) return false;
    if (state.outcome === "incorrect" && !runs.some((r) => r.correct === false)) return false;
    if (state.outcome === "flipped" && !img.flipped) return false;
    if (state.outcome === "wrong-reason" && !runs.some((r) => r.correct === true && r.in_box === false)) return false;
    if (state.outcome === "on-object" && !runs.some((r) => r.in_box === true)) return false;
    if (state.truth !== "any" && img.true !== state.truth.slice(2)) return false;
    if (state.pred !== "any" && !runs.some((r) => r.pred === state.pred.slice(2))) return false;
    if (state.query && !img.name.toLowerCase().includes(state.query)) return false;
    return true;
  }
  function sortKey(img) {
    const runs = runsOf(img);
    if (state.sort === "disagreement") return -(img.disagreement === null ? -Infinity : img.disagreement);
    if (state.sort === "confidence-desc") return -mean(runs.map((r) => r.conf));
    if (state.sort === "confidence-asc") return mean(runs.map((r) => r.conf));
    if (state.sort === "loss-desc") { const loss = mean(runs.map((r) => r.loss)); return loss === null ? Infinity : -loss; }
    const metric = { "energy-asc": ["energy_in_box", 1], "deletion-desc": ["deletion_auc", -1], "insertion-asc": ["insertion_auc", 1], "sanity-desc": ["sanity_rank_corr", -1] }[state.sort];
    if (metric) { const v = mean(runs.map((r) => r[metric[0]])); return v === null ? Infinity : metric[1] * v; }
    return 0;
  }
  function ordered() {
    const indices = data.images.map((_, i) => i).filter((i) => keep(data.images[i]));
    if (state.sort === "name") return indices.sort((a, b) => data.images[a].name.localeCompare(data.images[b].name));
    const keys = new Map(indices.map((i) => [i, sortKey(data.images[i])]));
    return indices.sort((a, b) => keys.get(a) - keys.get(b) || a - b);
  }

  // ---- gallery ---------------------------------------------------------------------------
  function outcome(run) {
    if (run.correct === true) return el("span", { class: "ok", text: "✓ correct" });
    if (run.correct === false) return el("span", { class: "bad", text: "✗ wrong" });
    return el("span", { class: "muted", text: "(no label)" });
  }
  // The photo with the heatmap layer over it (explain folders since the layers), else the old thumbnail.
  function picture(r, e, lazy) {
    const how = lazy ? { loading: "lazy" } : {};
    if (r.photo && r.heat) {
      const photo = el("img", Object.assign({ class: "photo", src: r.photo, alt: "photo, " + labels[e] }, how));
      const node = el("div", { class: "layers" }, [photo, el("img", Object.assign({ class: "heat", src: r.heat, alt: "" }, how))]);
      // Aspect-fit: as wide as the card (small photos are enlarged), at most THUMB_HEIGHT tall; in the image
      // view at most 75% of the window's height (every experiment's panel the same: one scale).
      const tallest = lazy ? THUMB_HEIGHT + "px" : "75vh";
      photo.addEventListener("load", () => { node.style.width = "min(100%, calc(" + tallest + " * " + (photo.naturalWidth / photo.naturalHeight).toFixed(4) + "))"; });
      return node;
    }
    const src = lazy ? r.thumb : r.full;
    return src ? el("img", Object.assign({ class: "plain", src: src, alt: "CAM of " + labels[e] }, how)) : el("span", { text: "(no overlay)" });
  }
  function tile(i) {
    const img = data.images[i];
    const columns = img.runs.map((r, e) => el("div", { class: "run" }, [
      picture(r, e, true),
      many ? el("div", { class: "exp", text: labels[e] }) : "",
      el("div", { text: r.pred + " " + pct(r.conf) }), outcome(r)]));
    const head = [el("span", { class: "name", text: img.name })];
    if (img.flipped) head.push(" ", el("span", { class: "badge", text: "flipped" }));
    const node = el("button", { class: "tile", type: "button", "data-index": String(i) }, [
      el("div", {}, head), el("div", { class: "muted small", text: "true: " + (img.true === null ? "unknown" : img.true + (many || img.runs[0].ptrue === null || img.runs[0].ptrue === undefined ? "" : " " + pct(img.runs[0].ptrue))) }),
      el("div", { class: "runs" }, columns)]);
    node.addEventListener("click", () => open(i));
    return node;
  }
  function heading() {
    const what = { all: "All images", correct: "Correct predictions", incorrect: "Mistakes", flipped: "Flipped images", "wrong-reason": "Right for the wrong reason", "on-object": "Map on the object" }[state.outcome];
    const order = document.querySelector("#filter-sort option[value='" + state.sort + "']");
    return what + (order ? ", sorted by " + order.textContent : "");
  }
  function render() {
    visible = ordered();
    document.getElementById("gallery-title").textContent = heading();
    const gallery = document.getElementById("gallery");
    gallery.replaceChildren(...visible.slice(0, state.shown).map(tile));
    document.getElementById("count").textContent = "Showing " + Math.min(state.shown, visible.length) + " of " +
      visible.length + " matching images (" + data.images.length + " in total)";
    const more = document.getElementById("more");
    more.hidden = visible.length <= state.shown;
  }
  document.getElementById("more").addEventListener("click", () => { state.shown += PAGE; render(); });

  // ---- per-image view --------------------------------------------------------------------
  const viewer = document.getElementById("viewer");
  function open(i) {
    current = i;
    const img = data.images[i];
    const position = visible.indexOf(i);
    const prev = el("button", { type: "button", text: "← previous" });
    const next = el("button", { type: "button", text: "next →" });
    const close = el("button", { type: "button", text: "close ✕" });
    prev.disabled = position <= 0;
    next.disabled = position < 0 || position >= visible.length - 1;
    prev.addEventListener("click", () => step(-1));
    next.addEventListener("click", () => step(1));
    close.addEventListener("click", shut);
    const panels = img.runs.map((r, e) => {
      const facts = [
        el("li", {}, ["prediction: " + r.pred + " " + pct(r.conf) + " ", outcome(r)]),
        el("li", { text: "loss: " + num(r.loss) }),
        el("li", { text: "top classes: " + r.top.map((t) => t[0] + " " + pct(t[1])).join(", ") }),
      ];
      if (r.in_box !== null && r.in_box !== undefined) facts.push(el("li", { text: "true-class map peak on the object: " + (r.in_box ? "yes" : "no") }));
      const named = [["energy_in_box", "share of the map's positive energy on the object", true], ["deletion_auc", "deletion AUC (lower: more faithful)"], ["insertion_auc", "insertion AUC (higher: more faithful)"], ["drop", "drop in confidence, map-masked input", true], ["sanity_rank_corr", "rank correlation with a randomised model's map"]];
      for (const [key, text, share] of named) if (r[key] !== null && r[key] !== undefined) facts.push(el("li", { text: text + ": " + (share ? pct(r[key]) : num(r[key])) }));
      // Every experiment's map drawn on the same photo at the same width: maps compared at one scale. The
      // overlay file as saved (labels burned in, a mistake's true-class map beside it) is one click away.
      const saved = r.photo && r.full ? el("details", {}, [el("summary", { text: "overlay file as saved" }), el("img", { class: "plain", src: r.full, alt: "overlay file of " + labels[e] })]) : "";
      return el("div", { class: "panel" }, [el("h3", { text: labels[e] }), picture(r, e, false), el("ul", {}, facts), saved]);
    });
    const parts = [
      el("div", { class: "bar" }, [el("h2", { id: "viewer-title", text: img.name }), ...heatControls("-viewer"), prev, next, close]),
      el("div", { class: "path", text: img.path }),
      el("div", { text: "true class: " + (img.true === null ? "unknown" : img.true) + (img.flipped ? " — flipped between experiments" : "") }),
      el("div", { class: "panels" }, panels),
    ];
    if (img.sims.length) {
      const rows = img.sims.map((s) => el("tr", {}, [el("td", { text: labels[s[0]] + " vs " + labels[s[1]] }), el("td", { text: num(s[2]) }), el("td", { text: num(s[3]) })]));
      parts.push(el("table", {}, [el("thead", {}, [el("tr", {}, [el("th", { text: "pair" }), el("th", { text: "CAM Spearman" }), el("th", { text: "top-20% IoU" })])]), el("tbody", {}, rows)]));
    }
    viewer.replaceChildren(...parts);
    viewer.hidden = false;
    if (location.hash !== "#image-" + i) history.replaceState(null, "", "#image-" + i);
    close.focus();
  }
  function step(delta) {
    const position = visible.indexOf(current) + delta;
    if (position >= 0 && position < visible.length) open(visible[position]);
  }
  function shut() {
    viewer.hidden = true;
    history.replaceState(null, "", location.pathname + location.search);
    const back = document.querySelector('.tile[data-index="' + current + '"]');
    if (back) back.focus();
  }
  document.addEventListener("keydown", (event) => {
    if (viewer.hidden) return;
    if (event.key === "Escape") shut();
    else if (event.key === "ArrowLeft") step(-1);
    else if (event.key === "ArrowRight") step(1);
  });

  render();
  const linked = /^#image-(\d+)$/.exec(location.hash);
  if (linked && Number(linked[1]) < data.images.length) open(Number(linked[1]));
})();
