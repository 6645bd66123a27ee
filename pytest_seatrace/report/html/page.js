(function () {
  "use strict";
  function key(row, i) {
    var cell = row.cells[i];
    var k = cell.getAttribute("data-k");
    return k === null ? cell.textContent : k;
  }
  function sortBy(table, i, th) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    var dir = th.getAttribute("aria-sort") === "ascending" ? -1 : 1;
    var numeric = rows.every(function (r) { return key(r, i) !== "" && !isNaN(Number(key(r, i))); });
    rows.sort(function (a, b) {
      var x = key(a, i), y = key(b, i);
      var d = numeric ? Number(x) - Number(y) : x.localeCompare(y, undefined, {numeric: true});
      return dir * d || Number(a.getAttribute("data-n")) - Number(b.getAttribute("data-n"));
    });
    Array.prototype.forEach.call(th.parentNode.cells, function (h) { h.removeAttribute("aria-sort"); });
    th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending");
    var frag = document.createDocumentFragment();
    rows.forEach(function (r) { frag.appendChild(r); });
    body.appendChild(frag);
  }
  function text(row) {
    if (row.seatraceText === undefined) {
      row.seatraceText = Array.prototype.map.call(row.cells, function (c) {
        return c.textContent.toLowerCase();
      }).join(" | ");
    }
    return row.seatraceText;
  }
  function filter(box, table) {
    var words = box.querySelector("input").value.toLowerCase().trim();
    var outcome = box.querySelector("select").value;
    var shown = 0;
    Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
      var ok = (!words || text(row).indexOf(words) >= 0) &&
        (!outcome || row.getAttribute("data-o") === outcome ||
         (outcome === "early" && row.hasAttribute("data-early")));
      row.hidden = !ok;
      shown += ok ? 1 : 0;
    });
    box.querySelector("output").textContent = shown + " of " + table.tBodies[0].rows.length + " rows";
  }
  Array.prototype.forEach.call(document.querySelectorAll("div.tools"), function (box) {
    var table = document.getElementById(box.getAttribute("data-table"));
    if (!table) { return; }
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      var button = document.createElement("button");
      button.type = "button";
      button.textContent = th.textContent;
      button.title = "sort by " + th.textContent;
      th.textContent = "";
      th.appendChild(button);
      button.addEventListener("click", function () { sortBy(table, i, th); });
    });
    box.querySelector("input").addEventListener("input", function () { filter(box, table); });
    box.querySelector("select").addEventListener("change", function () { filter(box, table); });
    box.hidden = false;
    filter(box, table);
  });
}());
