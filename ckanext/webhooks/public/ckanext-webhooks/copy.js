/* "Copy" buttons of the webhook pages: copy the value of the input named by
   data-webhooks-copy. Without JavaScript the buttons stay hidden and the
   read-only inputs can be selected and copied by hand. */
(function () {
  "use strict";

  function copied(button) {
    var label = button.textContent;
    button.textContent = button.getAttribute("data-copied-label") || label;
    window.setTimeout(function () { button.textContent = label; }, 2000);
  }

  function copy(button) {
    var input = document.getElementById(button.getAttribute("data-webhooks-copy"));
    if (!input) { return; }
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(input.value).then(function () {
        copied(button);
      }, function () {
        input.focus();
        input.select();
      });
      return;
    }
    input.focus();
    input.select();
    try {
      if (document.execCommand("copy")) { copied(button); }
    } catch (e) { /* the text stays selected for Ctrl+C */ }
  }

  function start() {
    var buttons = document.querySelectorAll("[data-webhooks-copy]");
    for (var i = 0; i < buttons.length; i++) {
      buttons[i].hidden = false;
      buttons[i].addEventListener("click", function (event) {
        copy(event.currentTarget);
      });
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", start);
  } else {
    start();
  }
})();
