// Progressive enhancement for the labeling page. Without this file every action is a plain
// form POST and works; with it, answers are posted with fetch and the next item (rendered by
// the server in the same round trip) is swapped in, keys answer, and the lease is kept alive.
//
// An answer is never lost: it is written to localStorage before it is sent, retried with the
// same fence while the network or the server fails, and re-sent after a reload. The server
// treats a repeat of a saved answer as saved (409 "already_voted" on the API), so a retry can
// never count twice.
(function () {
  "use strict";
  var RETRY_MS = [500, 1000, 2000, 4000, 8000, 15000, 30000];
  var HEARTBEAT_MS = 60000;
  var started = Date.now();
  var busy = false;

  function csrfToken() {
    var meta = document.querySelector('meta[name="csrf-token"]');
    return meta ? meta.getAttribute("content") : "";
  }

  function root() { return document.getElementById("labeling"); }

  function pendingKey() {
    var area = root();
    return area ? "feedback.pending:" + area.dataset.labelUrl : null;
  }

  function readPending() {
    var key = pendingKey();
    try { return key ? JSON.parse(window.localStorage.getItem(key) || "null") : null; }
    catch (e) { return null; }
  }

  function writePending(value) {
    var key = pendingKey();
    if (!key) { return; }
    try {
      if (value) { window.localStorage.setItem(key, JSON.stringify(value)); }
      else { window.localStorage.removeItem(key); }
    } catch (e) { /* private mode: the in-memory retry still runs */ }
  }

  function showSaving(text) {
    var note = document.getElementById("saving");
    if (note) { note.textContent = text; note.hidden = !text; }
  }

  // Replace the labeling area with the one in the server's answer (escaped server HTML).
  function swap(html) {
    var doc = new DOMParser().parseFromString(html, "text/html");
    var fresh = doc.getElementById("labeling");
    var area = root();
    if (!fresh || !area) { window.location.reload(); return; }
    area.replaceWith(document.importNode(fresh, true));
    document.title = doc.title;
    started = Date.now();
    window.history.replaceState(null, "", root().dataset.labelUrl);
    var first = root().querySelector("button[data-key]");
    if (first && document.activeElement === document.body) { first.focus({preventScroll: true}); }
  }

  function send(pending, attempt) {
    var body = new FormData();
    pending.fields.forEach(function (pair) { body.append(pair[0], pair[1]); });
    return fetch(pending.url, {
      method: "POST",
      body: body,
      credentials: "same-origin",
      headers: {"X-CSRFToken": csrfToken(), "X-Requested-With": "fetch"}
    }).then(function (response) {
      if (response.status >= 500) { throw new Error("server " + response.status); }
      if (response.status === 400 || response.redirected && /\/login/.test(response.url)) {
        writePending(null);
        window.location.reload();  // the session or its CSRF token expired: log in again
        return;
      }
      return response.text().then(function (html) {
        writePending(null);
        showSaving("");
        busy = false;
        swap(html);
      });
    }).catch(function () {
      var wait = RETRY_MS[Math.min(attempt, RETRY_MS.length - 1)];
      showSaving("Saving… the connection dropped; retrying in " + Math.round(wait / 1000) + " s.");
      window.setTimeout(function () { send(pending, attempt + 1); }, wait);
    });
  }

  function submitAsync(form, submitter) {
    if (busy) { return; }
    busy = true;
    var seconds = form.querySelector('input[name="seconds"]');
    if (seconds) { seconds.value = ((Date.now() - started) / 1000).toFixed(2); }
    var fields = [];
    new FormData(form).forEach(function (value, name) { fields.push([name, value]); });
    if (submitter && submitter.name) { fields.push([submitter.name, submitter.value]); }
    var item = document.getElementById("item");
    var pending = {url: form.action, fields: fields, item: item ? item.dataset.itemId : null};
    writePending(pending);
    send(pending, 0);
  }

  function press(button) {
    if (!button || busy) { return; }
    var form = button.form;
    if (form && form.hasAttribute("data-async")) { submitAsync(form, button); return; }
    if (form && form.requestSubmit) { form.requestSubmit(button); } else { button.click(); }
  }

  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.hasAttribute || !form.hasAttribute("data-async")) { return; }
    event.preventDefault();
    submitAsync(form, event.submitter);
  });

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey || event.metaKey || event.altKey || event.repeat) { return; }
    var target = event.target;
    if (target && /^(INPUT|TEXTAREA|SELECT)$/.test(target.tagName)) { return; }
    var help = document.getElementById("help");
    if (event.key === "?" && help) { help.hidden = !help.hidden; event.preventDefault(); return; }
    if (event.key === "Escape" && help) { help.hidden = true; return; }
    if (!root()) { return; }
    var button = root().querySelector('button[data-key="' + CSS.escape(event.key) + '"]');
    if (button) { event.preventDefault(); press(button); }
  });

  // Keep the lease alive while the page is open, so a slow answer is not refused.
  window.setInterval(function () {
    var item = document.getElementById("item");
    if (!item || busy) { return; }
    fetch("/api/v1/items/" + item.dataset.itemId + "/lease", {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "X-CSRFToken": csrfToken()},
      body: JSON.stringify({fence: parseInt(item.dataset.fence, 10)})
    }).catch(function () { /* the next heartbeat retries */ });
  }, HEARTBEAT_MS);

  // After a reload, send the answer that had not been confirmed yet.
  document.addEventListener("DOMContentLoaded", function () {
    var pending = readPending();
    if (pending && root()) { busy = true; send(pending, 0); }
  });
})();
