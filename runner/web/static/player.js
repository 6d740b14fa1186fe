// Read along: clicking a segment seeks the player; the segment being spoken is highlighted
// (class "current") and kept in view; ?t=SECONDS seeks on load.
(function () {
  "use strict";
  var media = document.getElementById("player");
  var list = document.getElementById("segments");
  if (!list) return;
  var segs = Array.prototype.slice.call(list.querySelectorAll(".seg"));
  var starts = segs.map(function (s) { return parseFloat(s.dataset.start); });
  var ends = segs.map(function (s) { return parseFloat(s.dataset.end); });
  var SLACK = 0.05; // a seek may land a few milliseconds before the start it was asked for
  var current = null;

  function indexAt(t) { // the last segment starting at or before t, or -1
    var lo = 0, hi = starts.length - 1, found = -1;
    while (lo <= hi) {
      var mid = (lo + hi) >> 1;
      if (starts[mid] <= t + SLACK) { found = mid; lo = mid + 1; } else { hi = mid - 1; }
    }
    return found;
  }

  function highlight(t) {
    var i = indexAt(t);
    var el = i >= 0 && t <= ends[i] + SLACK ? segs[i] : null;
    if (el === current) return;
    if (current) current.classList.remove("current");
    current = el;
    if (!el) return;
    el.classList.add("current");
    var box = list.getBoundingClientRect(), r = el.getBoundingClientRect();
    if (r.top < box.top || r.bottom > box.bottom) {
      list.scrollTop += r.top - box.top - (box.height - r.height) / 2;
    }
  }

  function seek(t) {
    highlight(t);
    if (!media) return;
    if (media.readyState >= 1) { media.currentTime = t; return; }
    media.addEventListener("loadedmetadata", function () { media.currentTime = t; }, { once: true });
  }

  list.addEventListener("click", function (ev) {
    var el = ev.target.closest(".seg");
    if (!el || !media) return;
    ev.preventDefault();
    var t = parseFloat(el.dataset.start);
    seek(t);
    history.replaceState(null, "", "?t=" + t.toFixed(3));
    var playing = media.play();
    if (playing && playing.catch) playing.catch(function () {}); // autoplay may be refused: the seek stands
  });

  if (media) {
    ["timeupdate", "seeked", "seeking"].forEach(function (name) {
      media.addEventListener(name, function () { highlight(media.currentTime); });
    });
  }

  var t0 = parseFloat(new URLSearchParams(location.search).get("t"));
  if (isFinite(t0) && t0 >= 0) seek(t0);
})();
