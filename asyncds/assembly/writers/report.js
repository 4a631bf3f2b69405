"use strict";
(function () {
  const D = JSON.parse(document.getElementById("asyncds-data").textContent);
  const PAGE = "https://www.flickr.com/photos/";
  const ticked = new Map();  // photo id -> true, in the order ticked
  const rootStyle = getComputedStyle(document.documentElement);
  const CW = parseInt(rootStyle.getPropertyValue("--cell-w"), 10) || 168;
  const CH = parseInt(rootStyle.getPropertyValue("--cell-h"), 10) || 206;
  const view = document.getElementById("view");
  const idsBox = document.getElementById("ids");
  let grid = null;

  function el(tag, attrs, text) {
    const node = document.createElement(tag);
    if (attrs) for (const k in attrs) node.setAttribute(k, attrs[k]);
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function href(path) { return path.split("/").map(encodeURIComponent).join("/"); }
  function page(owner, id) {
    return PAGE + encodeURIComponent(owner).replace(/%40/g, "@") + "/" + encodeURIComponent(id);
  }
  function licenseName(id) { return D.licenses[String(id)] || ("license " + id); }

  // A windowed grid: only the rows in view (and a few around) exist as elements.
  function Grid(container, count, cellW, cellH, render) {
    this.el = container; this.count = count; this.cw = cellW; this.ch = cellH;
    this.render = render; this.nodes = new Map(); this.range = [0, 0];
    this.layout();
  }
  Grid.prototype.layout = function () {
    this.cols = Math.max(1, Math.floor(this.el.clientWidth / this.cw));
    this.rows = Math.ceil(this.count / this.cols);
    this.el.style.height = (this.rows * this.ch) + "px";
    for (const node of this.nodes.values()) node.remove();
    this.nodes.clear(); this.range = [0, 0];
    this.update();
  };
  Grid.prototype.update = function () {
    const box = this.el.getBoundingClientRect();
    const top = Math.max(0, -box.top), bottom = Math.min(box.height, window.innerHeight - box.top);
    let first = 0, last = 0;
    if (bottom > 0 && top < box.height) {
      first = Math.max(0, Math.floor(top / this.ch) - 2) * this.cols;
      last = Math.min(this.count, (Math.ceil(bottom / this.ch) + 2) * this.cols);
    }
    if (first === this.range[0] && last === this.range[1]) return;
    for (const [i, node] of this.nodes) {
      if (i < first || i >= last) { node.remove(); this.nodes.delete(i); }
    }
    const frag = document.createDocumentFragment();
    for (let i = first; i < last; i++) {
      if (this.nodes.has(i)) continue;
      const node = this.render(i);
      node.style.left = ((i % this.cols) * this.cw) + "px";
      node.style.top = (Math.floor(i / this.cols) * this.ch) + "px";
      this.nodes.set(i, node); frag.appendChild(node);
    }
    this.el.appendChild(frag);
    this.range = [first, last];
  };

  function showTicked() {
    const ids = Array.from(ticked.keys());
    idsBox.value = ids.join("\n");
    document.getElementById("picked-n").textContent =
      ids.length ? ids.length + (ids.length === 1 ? " photo ticked" : " photos ticked") : "No photo ticked";
    document.getElementById("copied").textContent = "";
  }
  function tickBox(id, cell) {
    const label = el("label", {title: "tick to exclude"});
    const box = el("input", {type: "checkbox", "data-id": id, "aria-label": "tick photo " + id});
    box.checked = ticked.has(id);
    if (box.checked) cell.classList.add("picked");
    box.addEventListener("change", function () {
      if (box.checked) ticked.set(id, true); else ticked.delete(id);
      cell.classList.toggle("picked", box.checked);
      showTicked();
    });
    label.appendChild(box);
    return label;
  }
  function thumb(path, alt, title) {
    const a = el("a", {href: href(path), class: "thumb", target: "_blank"});
    const img = el("img", {src: href(path), alt: alt, loading: "lazy", decoding: "async"});
    if (title) img.title = title;
    a.appendChild(img);
    return a;
  }

  function showClass(index) {
    const cls = D.classes[index];
    view.textContent = "";
    view.appendChild(el("h2", null, cls.label));
    view.appendChild(el("p", {class: "note"}, cls.rows.length + " images, by file name. " +
      "Tick the photos to leave out; the ids collect at the bottom."));
    const container = el("div", {class: "grid", id: "grid", "data-class": cls.label});
    view.appendChild(container);
    grid = new Grid(container, cls.rows.length, CW, CH, function (i) {
      const r = cls.rows[i];  // [id, license, author, owner, test, title, path or 0]
      const id = r[0], path = r[6] || (cls.label + "/" + id + ".jpg");
      const cell = el("div", {class: "cell", "data-id": id});
      cell.appendChild(thumb(path, "photo " + id, r[5]));
      cell.appendChild(tickBox(id, cell));
      const meta = el("div", {class: "meta"});
      const line = el("div");
      line.appendChild(el("a", {href: page(r[3], id), target: "_blank", rel: "noopener noreferrer"}, id));
      line.appendChild(document.createTextNode(r[4] ? " · test" : " · train"));
      meta.appendChild(line);
      meta.appendChild(el("div", {class: "license"}, licenseName(r[1])));
      meta.appendChild(el("div", {class: "author"}, r[2] || r[3] || "unknown author"));
      cell.appendChild(meta);
      return cell;
    });
  }

  let byPath = null;
  function datasetImage(path) {
    if (byPath === null) {
      byPath = new Map();
      for (const cls of D.classes) for (const r of cls.rows)
        byPath.set(r[6] || (cls.label + "/" + r[0] + ".jpg"), r);
    }
    return byPath.get(path);
  }
  function showDropped() {
    view.textContent = "";
    view.appendChild(el("h2", null, "Dropped, worth a look"));
    let note = D.dropped_total + " near-duplicates and cross-class copies were dropped by dedup. " +
      "A dropped image's file is deleted, so it is shown by its Flickr page; beside it, the image " +
      "it collided with.";
    if (D.dropped_shown < D.dropped_total) note += " The first " + D.dropped_shown + " are listed.";
    view.appendChild(el("p", {class: "note"}, note));
    const container = el("div", {class: "grid", id: "grid", "data-class": ""});
    view.appendChild(container);
    const pairW = 2 * CW + 100 + 8;
    grid = new Grid(container, D.dropped.length, pairW, CH, function (i) {
      const d = D.dropped[i];  // [label, id, status, reason, owner, other path, other kept]
      const cell = el("div", {class: "cell pair", "data-id": d[1]});
      const left = el("div", {class: "side"});
      left.appendChild(el("div", {class: "gone"}, "dropped (" + d[2].replace("_", " ") + "), file deleted"));
      const line = el("div", {class: "meta"});
      line.appendChild(el("a", {href: page(d[4], d[1]), target: "_blank", rel: "noopener noreferrer"}, d[1]));
      line.appendChild(document.createTextNode(" · " + d[0]));
      left.appendChild(line);
      cell.appendChild(left);
      cell.appendChild(el("div", {class: "why"}, d[3]));
      const right = el("div", {class: "side"});
      const kept = d[6] ? datasetImage(d[5]) : null;
      if (kept) {
        right.appendChild(thumb(d[5], "photo " + kept[0], kept[5]));
        const meta = el("div", {class: "meta"});
        meta.appendChild(el("a", {href: page(kept[3], kept[0]), target: "_blank", rel: "noopener noreferrer"}, kept[0]));
        meta.appendChild(document.createTextNode(" · in the dataset"));
        right.appendChild(meta);
        right.appendChild(tickBox(kept[0], cell));
      } else {
        right.appendChild(el("div", {class: "gone"}, d[5] ? d[5] + ": not in the dataset" : "no image named"));
      }
      cell.appendChild(right);
      return cell;
    });
  }

  const tabs = Array.from(document.querySelectorAll(".tab"));
  function choose(tab, scroll) {
    for (const t of tabs) t.setAttribute("aria-selected", String(t === tab));
    const which = tab.getAttribute("data-tab");
    if (which === "dropped") showDropped(); else showClass(Number(which));
    // A chosen class starts at the top of the window, under the sticky tabs.
    if (scroll) window.scrollTo(0, window.scrollY + view.getBoundingClientRect().top - tabBar.offsetHeight);
    if (grid) grid.update();
  }
  const tabBar = document.getElementById("tabs");
  for (const tab of tabs) tab.addEventListener("click", function () { choose(tab, true); });
  document.getElementById("dropped-n").textContent = String(D.dropped_total);

  let pending = false;
  function later(fn) {
    if (pending) return;
    pending = true;
    requestAnimationFrame(function () { pending = false; fn(); });
  }
  window.addEventListener("scroll", function () { if (grid) later(function () { grid.update(); }); }, {passive: true});
  window.addEventListener("resize", function () { if (grid) later(function () { grid.layout(); }); });

  document.getElementById("clear").addEventListener("click", function () {
    ticked.clear();
    for (const box of document.querySelectorAll(".cell input:checked")) box.checked = false;
    for (const cell of document.querySelectorAll(".cell.picked")) cell.classList.remove("picked");
    showTicked();
  });
  document.getElementById("copy").addEventListener("click", function () {
    const status = document.getElementById("copied");
    const text = idsBox.value;
    function fallback() {
      idsBox.focus(); idsBox.select();
      let ok = false;
      try { ok = document.execCommand("copy"); } catch (e) { ok = false; }
      status.textContent = ok ? "copied" : "select the text box and copy it";
    }
    if (navigator.clipboard && navigator.clipboard.writeText) {
      navigator.clipboard.writeText(text).then(function () { status.textContent = "copied"; }, fallback);
    } else {
      fallback();
    }
  });
  if (tabs.length) choose(tabs[0], false);
})();
