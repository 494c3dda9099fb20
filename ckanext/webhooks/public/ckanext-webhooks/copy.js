/* "Copy" buttons of the webhook pages. data-webhooks-copy names an input
   whose value is copied; data-webhooks-copy-text holds the text itself.
   Without JavaScript the buttons stay hidden: the read-only inputs can be
   selected by hand, and shortened ids show in full on hover and on their
   own pages. */
(function () {
  "use strict";

  function copied(button) {
    var label = button.getAttribute("data-copied-label");
    if (button.children.length) {
      // an icon button: mark it for a moment instead of changing its text
      var title = button.title;
      button.classList.add("webhooks-copied");
      if (label) { button.title = label; }
      window.setTimeout(function () {
        button.classList.remove("webhooks-copied");
        button.title = title;
      }, 2000);
      return;
    }
    var text = button.textContent;
    button.textContent = label || text;
    window.setTimeout(function () { button.textContent = text; }, 2000);
  }

  function selectByHand(input) {
    if (!input) { return; }
    input.focus();
    input.select();
    try {
      document.execCommand("copy");
    } catch (e) { /* the text stays selected for Ctrl+C */ }
  }

  function copy(button) {
    var input = null;
    var text = button.getAttribute("data-webhooks-copy-text");
    if (text === null) {
      input = document.getElementById(button.getAttribute("data-webhooks-copy"));
      if (!input) { return; }
      text = input.value;
    }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(function () {
        copied(button);
      }, function () { selectByHand(input); });
      return;
    }
    if (!input) {
      // a text without an input: copy it through a hidden one
      input = document.createElement("textarea");
      input.value = text;
      input.setAttribute("readonly", "");
      input.style.position = "fixed";
      input.style.opacity = "0";
      document.body.appendChild(input);
      selectByHand(input);
      document.body.removeChild(input);
      copied(button);
      return;
    }
    selectByHand(input);
    copied(button);
  }

  function start(root) {
    var buttons = root.querySelectorAll(
      "[data-webhooks-copy], [data-webhooks-copy-text]");
    for (var i = 0; i < buttons.length; i++) {
      if (buttons[i].getAttribute("data-webhooks-copy-ready")) { continue; }
      buttons[i].setAttribute("data-webhooks-copy-ready", "1");
      buttons[i].hidden = false;
      buttons[i].addEventListener("click", function (event) {
        event.preventDefault();
        copy(event.currentTarget);
      });
    }
  }

  // live.js calls this again for the parts of the page it replaces
  window.webhooksCopyButtons = start;

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", function () { start(document); });
  } else {
    start(document);
  }
})();
