// A stand-in for a Vue build's bundle: history-mode routing on /app/, and
// a call to the Java API behind the same origin.
(function () {
  var el = document.getElementById("app");
  var route = location.pathname.replace(/^\/app/, "") || "/";
  el.textContent = "route " + route;
  fetch("/api/").then(function (r) { return r.json(); }).then(function (data) {
    el.setAttribute("data-api", data.service);
  });
})();
