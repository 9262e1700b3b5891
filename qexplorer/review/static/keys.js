// Keyboard shortcuts: a key clicks the button that declares it in data-key (c, r, u, s, z).
// Enter in a field of the decision form decides nothing (the buttons do); the undo offer
// counts down and goes away when its window closes.
document.addEventListener("keydown", function (event) {
  var target = event.target;
  var inField = target && (target.tagName === "INPUT" || target.tagName === "TEXTAREA");
  if (inField && event.key === "Enter" && target.form && target.form.classList.contains("decide")) {
    event.preventDefault();
    return;
  }
  if (event.ctrlKey || event.metaKey || event.altKey || inField) return;
  var button = document.querySelector('button[data-key="' + event.key.toLowerCase() + '"]');
  if (button) {
    event.preventDefault();
    button.click();
  }
});

document.addEventListener("DOMContentLoaded", function () {
  var form = document.querySelector("form.undo[data-countdown]");
  if (!form) return;
  var deadline = Date.now() + 1000 * parseInt(form.getAttribute("data-countdown"), 10);
  var seconds = form.querySelector(".seconds");
  var tick = setInterval(function () {
    var left = Math.ceil((deadline - Date.now()) / 1000);
    if (left <= 0) {
      clearInterval(tick);
      form.remove();
      return;
    }
    if (seconds) seconds.textContent = left;
  }, 250);
});
