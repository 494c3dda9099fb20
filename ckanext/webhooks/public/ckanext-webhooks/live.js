/* Keeps a webhook's page up to date without a reload.

   Parts of the page marked data-webhooks-live (status, deliveries...) are
   fetched again while something is under way (data-webhooks-busy="true":
   a pending delivery, a hook waiting for verification), every second at
   first and less often later, for at most five minutes. Forms marked
   data-webhooks-async (ping, test event, retry, ...) are sent in the
   background; the page they lead to replaces those parts, the parts marked
   data-webhooks-after-submit (the buttons, the secret) and the flash
   messages. Without JavaScript every form posts and the page reloads, and
   a reload shows the newest state. */
(function () {
  "use strict";

  var FIRST_DELAY = 1000;
  var MAX_DELAY = 10000;
  var POLL_FOR = 5 * 60 * 1000;
  var timer = null;
  var delay = FIRST_DELAY;
  var pollingSince = 0;
  var sending = false;

  function byName(doc, attribute) {
    var found = {};
    var elements = doc.querySelectorAll("[" + attribute + "]");
    for (var i = 0; i < elements.length; i++) {
      found[elements[i].getAttribute(attribute)] = elements[i];
    }
    return found;
  }

  function openDetails(element) {
    var open = {};
    var details = element.querySelectorAll("details[id]");
    for (var i = 0; i < details.length; i++) {
      if (details[i].open) { open[details[i].id] = true; }
    }
    return open;
  }

  function replace(attribute, fresh) {
    var now = byName(document, attribute);
    var next = byName(fresh, attribute);
    Object.keys(now).forEach(function (name) {
      var old = now[name];
      var replacement = next[name];
      if (!replacement) { return; }
      var open = openDetails(old);
      old.innerHTML = replacement.innerHTML;
      for (var i = 0; i < replacement.attributes.length; i++) {
        var a = replacement.attributes[i];
        old.setAttribute(a.name, a.value);
      }
      Object.keys(open).forEach(function (id) {
        var details = document.getElementById(id);
        if (details) { details.open = true; }
      });
      if (window.webhooksCopyButtons) { window.webhooksCopyButtons(old); }
    });
  }

  function state(doc) {
    var status = doc.querySelector("[data-webhooks-state]");
    return status ? status.getAttribute("data-webhooks-state") : null;
  }

  function busy(doc) {
    return !!doc.querySelector('[data-webhooks-busy="true"]');
  }

  function parse(html) {
    return new DOMParser().parseFromString(html, "text/html");
  }

  function schedule() {
    window.clearTimeout(timer);
    if (Date.now() - pollingSince > POLL_FOR) { return; }
    timer = window.setTimeout(poll, delay);
    delay = Math.min(MAX_DELAY, Math.round(delay * 1.5));
  }

  function startPolling() {
    pollingSince = Date.now();
    delay = FIRST_DELAY;
    schedule();
  }

  // a tab in the background polls too: it stops after POLL_FOR anyway
  function poll() {
    if (sending) { schedule(); return; }
    window.fetch(window.location.pathname + window.location.search, {
      credentials: "same-origin", headers: {"Accept": "text/html"}
    }).then(function (response) {
      if (!response.ok) { return null; }
      return response.text();
    }).then(function (html) {
      if (html === null || sending) { schedule(); return; }
      var fresh = parse(html);
      var changed = state(fresh) !== state(document);
      replace("data-webhooks-live", fresh);
      if (changed) { replace("data-webhooks-after-submit", fresh); }
      if (busy(fresh)) { schedule(); }
    }, schedule);
  }

  function showFlash(fresh) {
    var now = document.querySelector(".flash-messages");
    var next = fresh.querySelector(".flash-messages");
    if (now && next) { now.innerHTML = next.innerHTML; }
  }

  function setDisabled(form, disabled) {
    var buttons = form.querySelectorAll("button");
    for (var i = 0; i < buttons.length; i++) { buttons[i].disabled = disabled; }
  }

  function send(form) {
    sending = true;
    setDisabled(form, true);
    window.fetch(form.action, {
      method: "POST", body: new FormData(form), credentials: "same-origin"
    }).then(function (response) {
      return response.text().then(function (html) {
        var target = new URL(response.url, window.location.href);
        if (response.ok && target.pathname === window.location.pathname) {
          var fresh = parse(html);
          replace("data-webhooks-live", fresh);
          replace("data-webhooks-after-submit", fresh);
          showFlash(fresh);
          if (busy(fresh)) { startPolling(); }
        } else if (response.ok) {
          window.location.assign(response.url);  // e.g. back to the admin page
        } else {
          document.open();
          document.write(html);
          document.close();
        }
      });
    }).catch(function () {
      // no answer: show the page as it is now (the form may or may not
      // have arrived, so it is not sent again)
      window.location.reload();
    }).then(function () {
      sending = false;
      setDisabled(form, false);
    });
  }

  function start() {
    if (!window.fetch || !window.DOMParser || !window.FormData) { return; }
    var flash = document.querySelector(".flash-messages");
    if (flash) { flash.setAttribute("aria-live", "polite"); }
    document.addEventListener("submit", function (event) {
      var form = event.target;
      if (!form.hasAttribute || !form.hasAttribute("data-webhooks-async")) { return; }
      event.preventDefault();
      if (!sending) { send(form); }
    });
    if (busy(document)) { startPolling(); }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
