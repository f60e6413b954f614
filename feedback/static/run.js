// The run page follows its run: poll the run's JSON and reload when a stage moves on.
// Without this file the page still shows the state at load time.
(function () {
  "use strict";
  var box = document.getElementById("run");
  if (!box || box.dataset.active !== "1") { return; }
  var every = 2000;
  var deadline = Date.now() + 6 * 3600 * 1000;

  function signature(run) {
    var parts = run.stages.map(function (s) { return s.name + ":" + s.state + ","; });
    var rescore = (run.report && run.report.rescore) || {};
    var items = rescore.items === undefined || rescore.items === null ? "" : rescore.items;
    return parts.join("") + run.status + ":" + items;
  }

  function poll() {
    if (Date.now() > deadline) { return; }
    fetch(box.dataset.url, {credentials: "same-origin", headers: {"Accept": "application/json"}})
      .then(function (response) { return response.ok ? response.json() : null; })
      .then(function (run) {
        if (run && signature(run) !== box.dataset.signature) { window.location.reload(); return; }
        setTimeout(poll, every);
      })
      .catch(function () { setTimeout(poll, every * 2); });
  }

  setTimeout(poll, every);
})();
