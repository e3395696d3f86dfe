// flow-orchestrator dashboard: the little behaviour the pages need. No framework, no
// inline script (the Content-Security-Policy forbids it). Everything that comes from the
// server is either HTML it rendered and escaped, parsed into an inert document, or JSON
// whose strings reach the page only as textContent and attribute values.
"use strict";

(function () {
  const SVG = "http://www.w3.org/2000/svg";
  const MAX_DRAWN = 300;

  // --- humane times ------------------------------------------------------------------
  const UNITS = [["d", 86400], ["h", 3600], ["min", 60], ["s", 1]];

  function relative(iso) {
    const seconds = (Date.now() - Date.parse(iso)) / 1000;
    if (Number.isNaN(seconds)) return null;
    if (Math.abs(seconds) < 1) return "just now";
    const size = Math.abs(seconds);
    let text = "1 s";
    for (const [unit, length] of UNITS) {
      if (size >= length) { text = Math.floor(size / length) + " " + unit; break; }
    }
    return seconds > 0 ? text + " ago" : "in " + text;
  }

  function refreshTimes(root) {
    for (const time of (root || document).querySelectorAll("time[datetime]")) {
      const text = relative(time.getAttribute("datetime"));
      if (text !== null && time.textContent !== text) time.textContent = text;
    }
  }

  // --- fragments -----------------------------------------------------------------------
  async function fetchDocument(url) {
    const response = await fetch(url, { headers: { Accept: "text/html" }, credentials: "same-origin" });
    if (response.status === 401) { window.location.reload(); return null; }
    if (!response.ok) throw new Error(response.status + " " + response.statusText);
    return new DOMParser().parseFromString(await response.text(), "text/html");
  }

  function adopt(doc) {
    const nodes = [];
    for (const node of Array.from(doc.body.childNodes)) nodes.push(document.importNode(node, true));
    return nodes;
  }

  function withFragment(url) {
    return url + (url.includes("?") ? "&" : "?") + "fragment=1";
  }

  async function loadDetail(details) {
    const body = details.querySelector("[data-detail-body]");
    if (!body) return;
    try {
      const doc = await fetchDocument(withFragment(details.dataset.detail));
      if (doc) { body.replaceChildren(...adopt(doc)); refreshTimes(body); details.dataset.loaded = "1"; }
    } catch (error) {
      body.textContent = "Could not load this step: " + error.message;
    }
  }

  document.addEventListener("toggle", (event) => {
    const details = event.target;
    if (details instanceof HTMLDetailsElement && details.open && details.dataset.detail && !details.dataset.loaded) {
      loadDetail(details);
    }
  }, true);

  document.addEventListener("click", async (event) => {
    const button = event.target instanceof Element ? event.target.closest("[data-load-iterations],[data-iterations-page]") : null;
    if (!button) return;
    const box = button.closest("[data-iterations]");
    const url = button.dataset.iterationsPage || (box && box.dataset.iterations);
    if (!box || !url) return;
    button.disabled = true;
    try {
      const doc = await fetchDocument(url);
      if (doc) box.replaceChildren(...adopt(doc));
    } catch (error) {
      box.textContent = "Could not load the iterations: " + error.message;
    }
  });

  // --- forms -----------------------------------------------------------------------------
  document.addEventListener("submit", (event) => {
    const form = event.target;
    if (!(form instanceof HTMLFormElement)) return;
    const field = form.dataset.jsonField;
    if (field) {
      const input = form.elements.namedItem(field);
      const error = form.querySelector('[data-error-for="' + field + '"]');
      const text = input && "value" in input ? input.value.trim() : "";
      try {
        if (text) JSON.parse(text);
        if (error) error.textContent = "";
      } catch (problem) {
        if (error) error.textContent = "The payload is not valid JSON: " + problem.message;
        event.preventDefault();
        return;
      }
    }
    if (form.dataset.confirm && !window.confirm(form.dataset.confirm)) {
      event.preventDefault();
      return;
    }
    // After the browser collected the form (the clicked button's value included).
    setTimeout(() => { for (const b of form.querySelectorAll("button")) b.disabled = true; }, 0);
  });

  // --- live pages ---------------------------------------------------------------------
  function swapParts(doc) {
    for (const fresh of doc.querySelectorAll("[data-live-part][id]")) {
      const current = document.getElementById(fresh.id);
      if (!current) continue;
      if (fresh.dataset.version !== undefined && fresh.dataset.version === current.dataset.version) continue;
      const open = new Set();
      for (const d of current.querySelectorAll("details[open][id]")) open.add(d.id);
      const replacement = document.importNode(fresh, true);
      current.replaceWith(replacement);
      for (const d of replacement.querySelectorAll("details[id]")) {
        if (open.has(d.id)) { d.open = true; loadDetail(d); }
      }
      refreshTimes(replacement);
    }
  }

  function startLive(box) {
    const dot = document.getElementById("live-dot");
    if (dot) dot.classList.add("shown");
    let busy = false;
    let again = false;
    async function refresh() {
      if (busy) { again = true; return; }
      busy = true;
      try {
        const doc = await fetchDocument(box.dataset.fragment);
        if (doc) swapParts(doc);
        const dag = document.getElementById("dag");
        if (dag && box.dataset.graphRefresh) await Dag.refresh(dag);
      } catch (error) {
        if (dot) dot.classList.remove("on");
      } finally {
        busy = false;
        if (again) { again = false; refresh(); }
      }
    }
    const source = new EventSource(box.dataset.live);
    // Whatever changed between rendering the page and subscribing is caught up on open.
    source.addEventListener("open", () => { if (dot) dot.classList.add("on"); refresh(); });
    source.addEventListener("error", () => { if (dot) dot.classList.remove("on"); });
    source.addEventListener("change", refresh);
  }

  // --- the DAG --------------------------------------------------------------------------
  function el(name, attributes, parent) {
    const node = document.createElementNS(SVG, name);
    for (const [key, value] of Object.entries(attributes || {})) node.setAttribute(key, String(value));
    if (parent) parent.appendChild(node);
    return node;
  }

  function clip(text, length) {
    return text.length > length ? text.slice(0, length - 1) + "…" : text;
  }

  function subline(node) {
    if (node.counts && node.counts.length) {
      return node.counts.map(([status, n]) => n + " " + status.toLowerCase()).join(" · ");
    }
    return node.type;
  }

  function stClass(status) {
    return status ? " st-" + String(status).toLowerCase().replace(/ /g, "-") : "";
  }

  const Dag = {
    expanded: new Set(),
    data: null,
    shapes: new Map(),

    async load(box) {
      const response = await fetch(box.dataset.graph, { credentials: "same-origin" });
      if (!response.ok) throw new Error(response.status + " " + response.statusText);
      return response.json();
    },

    async start(box) {
      try {
        Dag.data = await Dag.load(box);
      } catch (error) {
        box.textContent = "Could not load the graph: " + error.message;
        return;
      }
      const count = Dag.data.nodes.length;
      if (count > MAX_DRAWN) {
        const note = document.createElement("p");
        note.className = "empty";
        note.textContent = count + " steps: drawing them all takes a while. ";
        const button = document.createElement("button");
        button.type = "button";
        button.textContent = "Draw anyway";
        button.addEventListener("click", () => Dag.draw(box));
        note.appendChild(button);
        box.replaceChildren(note);
        return;
      }
      Dag.draw(box);
    },

    async refresh(box) {
      if (!Dag.data || !window.dagre) return;
      const fresh = await Dag.load(box);
      const ids = (d) => d.nodes.map((n) => n.id).join("\n");
      const redraw = ids(fresh) !== ids(Dag.data);
      Dag.data = fresh;
      if (redraw) { Dag.draw(box); return; }
      for (const node of Dag.allNodes()) {
        const shape = Dag.shapes.get(node.id);
        if (!shape) continue;
        shape.group.setAttribute("class", "dag-node" + stClass(node.status));
        shape.group.dataset.status = node.status || "";
        shape.sub.textContent = clip(subline(node), 46);
      }
    },

    allNodes() {
      const found = [];
      for (const node of Dag.data.nodes) {
        found.push(node);
        if (node.body) found.push(...node.body.nodes);
      }
      return found;
    },

    size(node) {
      const text = Math.max(node.label.length, Math.min(subline(node).length, 46) * 0.85);
      return { width: Math.min(Math.max(118, text * 7.4 + 28), 300), height: 44 };
    },

    draw(box) {
      if (!window.dagre) { box.textContent = "The graph layout library did not load."; return; }
      const graph = new window.dagre.graphlib.Graph({ compound: true, multigraph: false });
      graph.setGraph({ rankdir: "LR", nodesep: 22, ranksep: 44, edgesep: 10, marginx: 14, marginy: 22 });
      graph.setDefaultEdgeLabel(() => ({}));
      for (const node of Dag.data.nodes) {
        graph.setNode(node.id, { ...Dag.size(node), node });
        if (node.body && Dag.expanded.has(node.id)) Dag.addBody(graph, node);
      }
      for (const edge of Dag.data.edges) {
        if (graph.hasNode(edge.from) && graph.hasNode(edge.to)) {
          graph.setEdge(edge.from, edge.to, { label: edge.label, width: edge.label ? edge.label.length * 6 : 0, height: edge.label ? 12 : 0, labelpos: "c" });
        }
      }
      window.dagre.layout(graph);
      Dag.render(box, graph);
    },

    addBody(graph, loop) {
      const cluster = loop.id + "\u0000body";
      graph.setNode(cluster, { label: loop.label + " (each item)", clusterLabelPos: "top" });
      const inner = new Set(loop.body.edges.map((e) => e.to));
      for (const child of loop.body.nodes) {
        graph.setNode(child.id, { ...Dag.size(child), node: child });
        graph.setParent(child.id, cluster);
        if (!inner.has(child.id)) graph.setEdge(loop.id, child.id, { label: "", width: 0, height: 0, body: true });
      }
      for (const edge of loop.body.edges) graph.setEdge(edge.from, edge.to, { label: edge.label, width: 0, height: 0 });
    },

    render(box, graph) {
      const layout = graph.graph();
      const svg = el("svg", { width: Math.ceil(layout.width), height: Math.ceil(layout.height), viewBox: "0 0 " + Math.ceil(layout.width) + " " + Math.ceil(layout.height), role: "img" });
      const defs = el("defs", {}, svg);
      const marker = el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 9, refY: 5, markerWidth: 7, markerHeight: 7, orient: "auto-start-reverse" }, defs);
      el("path", { d: "M 0 0 L 10 5 L 0 10 z", class: "dag-arrow" }, marker);
      for (const id of graph.nodes()) {
        const box2 = graph.node(id);
        if (box2.node) continue;
        const g = el("g", { class: "dag-cluster" }, svg);
        el("rect", { x: box2.x - box2.width / 2, y: box2.y - box2.height / 2, width: box2.width, height: box2.height, rx: 8 }, g);
        const title = el("text", { x: box2.x - box2.width / 2 + 4, y: box2.y - box2.height / 2 - 5 }, g);
        title.textContent = clip(box2.label || "", 60);
      }
      for (const edgeId of graph.edges()) {
        const edge = graph.edge(edgeId);
        const g = el("g", { class: "dag-edge" }, svg);
        const points = edge.points.map((p) => p.x.toFixed(1) + " " + p.y.toFixed(1));
        el("path", { d: "M " + points.join(" L "), "marker-end": "url(#arrow)", "stroke-dasharray": edge.body ? "4 3" : "" }, g);
        if (edge.label) {
          const text = el("text", { x: edge.x, y: edge.y + 3, "text-anchor": "middle" }, g);
          text.textContent = edge.label;
        }
      }
      Dag.shapes = new Map();
      for (const id of graph.nodes()) {
        const box2 = graph.node(id);
        if (!box2.node) continue;
        Dag.shapes.set(id, Dag.renderNode(svg, box2, box));
      }
      box.replaceChildren(svg);
    },

    renderNode(svg, box2, container) {
      const node = box2.node;
      const left = box2.x - box2.width / 2;
      const top = box2.y - box2.height / 2;
      const group = el("g", { class: "dag-node" + stClass(node.status), tabindex: 0, role: "button" }, svg);
      group.dataset.id = node.id;
      group.dataset.status = node.status || "";
      const tip = el("title", {}, group);
      tip.textContent = node.id + (node.status ? " — " + node.status : "") + " (" + node.type + ")";
      el("rect", { class: "box", x: left, y: top, width: box2.width, height: box2.height, rx: 7 }, group);
      const label = el("text", { x: left + 10, y: top + 18, "font-weight": 600 }, group);
      label.textContent = clip(node.label, 36);
      const sub = el("text", { class: "sub", x: left + 10, y: top + 34 }, group);
      sub.textContent = clip(subline(node), 46);
      if (node.body) {
        const sign = el("text", { x: left + box2.width - 16, y: top + 18, "font-weight": 700 }, group);
        sign.textContent = Dag.expanded.has(node.id) ? "−" : "+";
      }
      const act = () => Dag.activate(node, container);
      group.addEventListener("click", act);
      group.addEventListener("keydown", (event) => { if (event.key === "Enter" || event.key === " ") { event.preventDefault(); act(); } });
      return { group, sub };
    },

    activate(node, container) {
      if (node.body) {
        if (Dag.expanded.has(node.id)) Dag.expanded.delete(node.id); else Dag.expanded.add(node.id);
        Dag.draw(container);
        return;
      }
      const top = node.id.split(".")[0];
      const row = document.getElementById("step-" + node.id) || document.getElementById("step-" + top);
      if (row instanceof HTMLDetailsElement) {
        row.open = true;
        row.scrollIntoView({ behavior: "smooth", block: "center" });
      }
    },
  };

  // --- start ----------------------------------------------------------------------------
  document.addEventListener("DOMContentLoaded", () => {
    refreshTimes();
    setInterval(refreshTimes, 15000);
    const dag = document.getElementById("dag");
    if (dag && dag.dataset.graph) Dag.start(dag);
    for (const box of document.querySelectorAll("[data-live]")) startLive(box);
  });
})();
