// Keycard console: pages refresh themselves when what they show changes, and expiry times count
// down. Plain JavaScript, no dependencies; everything works without it, only less live.
(function () {
  "use strict";
  var poll = document.body.getAttribute("data-poll");
  if (poll) {
    var stamp = null;
    var busy = function () {  // never reload under someone typing or choosing
      var el = document.activeElement;
      return el && /^(INPUT|TEXTAREA|SELECT)$/.test(el.tagName) && el.value !== "";
    };
    var check = function () {
      fetch(poll, { credentials: "same-origin", headers: { "Accept": "application/json" } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (body) {
          if (!body) return;
          if (stamp !== null && body.stamp !== stamp && !busy()) window.location.reload();
          stamp = body.stamp;
        })
        .catch(function () {});
    };
    check();
    window.setInterval(check, 4000);
  }
  var countdowns = document.querySelectorAll("time[data-countdown]");
  var tick = function () {
    countdowns.forEach(function (el) {
      var end = Date.parse(el.getAttribute("datetime"));
      if (isNaN(end)) return;
      var left = Math.max(0, Math.round((end - Date.now()) / 1000));
      var h = Math.floor(left / 3600), m = Math.floor((left % 3600) / 60), s = left % 60;
      el.textContent = (h ? h + "h " : "") + (h || m ? m + "m " : "") + s + "s left";
      el.title = new Date(end).toISOString();
    });
  };
  if (countdowns.length) { tick(); window.setInterval(tick, 1000); }
})();
