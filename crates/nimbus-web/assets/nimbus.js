// Nimbus pages work without this file; with it:
// - line numbers select ranges: click a number for #L12, shift-click
//   another for #L12-L20; the range is marked and scrolled to, on load
//   and on every hash change (so the back button restores it).
(function () {
  "use strict";
  var RANGE = /^#L(\d+)(?:-L(\d+))?$/;

  function range(hash) {
    var match = RANGE.exec(hash);
    if (!match) return null;
    var start = parseInt(match[1], 10);
    var end = match[2] ? parseInt(match[2], 10) : start;
    return start <= end ? [start, end] : [end, start];
  }

  function mark(scroll) {
    var marked = document.querySelectorAll("tr.marked");
    for (var i = 0; i < marked.length; i++) marked[i].classList.remove("marked");
    var lines = range(location.hash);
    if (!lines) return;
    var first = null;
    for (var n = lines[0]; n <= lines[1]; n++) {
      var row = document.getElementById("L" + n);
      if (!row) break;
      row.classList.add("marked");
      if (!first) first = row;
    }
    if (first && scroll) first.scrollIntoView({ block: "center" });
  }

  document.addEventListener("click", function (event) {
    var link = event.target.closest && event.target.closest("td.num a[href^='#L']");
    if (!link) return;
    var clicked = range(link.getAttribute("href"));
    var current = range(location.hash);
    if (!clicked) return;
    event.preventDefault();
    var hash = "#L" + clicked[0];
    if (event.shiftKey && current) {
      var start = Math.min(current[0], clicked[0]);
      var end = Math.max(current[0], clicked[0]);
      hash = start === end ? "#L" + start : "#L" + start + "-L" + end;
    }
    if (hash !== location.hash) {
      history.pushState(null, "", hash);
      mark(false);
    }
  });
  window.addEventListener("hashchange", function () { mark(true); });
  window.addEventListener("popstate", function () { mark(true); });
  document.documentElement.setAttribute("data-nimbus-js", "1");
  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { mark(true); });
  } else {
    mark(true);
  }
})();
