// netlet dashboard: live updates by server-sent events. The server renders each
// page's live part (escaped by its templates) and sends it again when it changes.
(function () {
  "use strict";
  var live = document.getElementById("live");
  var status = document.getElementById("status");
  function show(text, cls) {
    if (status) { status.textContent = text; status.className = cls; }
  }
  if (!live || !live.dataset.stream || !window.EventSource) { return; }
  var source = new EventSource(live.dataset.stream);
  source.addEventListener("open", function () { show("live", "on"); });
  source.addEventListener("update", function (event) {
    live.innerHTML = event.data;
    show("live", "on");
  });
  source.addEventListener("error", function () { show("reconnecting", "off"); });
  window.addEventListener("beforeunload", function () { source.close(); });
})();
