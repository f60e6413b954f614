// Progressive enhancement for the labeling page: keyboard shortcuts, time spent, lease heartbeat.
// Every action is a plain form POST, so the page works without this file too.
(function () {
  "use strict";
  var started = Date.now();
  var submitting = false;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function press(button) {
    if (submitting || !button) { return; }
    submitting = true;
    var form = button.form;
    var seconds = form && form.querySelector('input[name="seconds"]');
    if (seconds) { seconds.value = ((Date.now() - started) / 1000).toFixed(2); }
    if (form && form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey) { return; }
    var target = event.target;
    if (target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA")) { return; }
    if (event.key === "?") {
      var help = document.getElementById("help");
      if (help) { help.hidden = !help.hidden; }
      return;
    }
    var button = document.querySelector('button[data-key="' + CSS.escape(event.key) + '"]');
    if (button) { event.preventDefault(); press(button); }
  });

  document.addEventListener("submit", function (event) {
    var seconds = event.target.querySelector('input[name="seconds"]');
    if (seconds && seconds.value === "0") { seconds.value = ((Date.now() - started) / 1000).toFixed(2); }
  });

  // Keep the lease alive while the page is open, so a slow answer is not lost.
  var item = document.getElementById("item");
  if (item) {
    setInterval(function () {
      fetch("/api/v1/items/" + item.dataset.itemId + "/lease", {
        method: "POST",
        credentials: "same-origin",
        headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
        body: JSON.stringify({fence: parseInt(item.dataset.fence, 10)})
      }).catch(function () { /* the next heartbeat retries */ });
    }, 60000);
  }
})();
