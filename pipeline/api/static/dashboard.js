// Draws the daily cost chart from the page's JSON data block (no inline script: the page's
// Content-Security-Policy allows scripts from this origin only). Chart.js is vendored.
(function () {
  "use strict";
  var block = document.getElementById("daily-data");
  var canvas = document.getElementById("daily-chart");
  if (!block || !canvas || typeof Chart === "undefined") { return; }
  var rows = JSON.parse(block.textContent || "[]");
  var dates = [], models = [], cost = {};
  rows.forEach(function (r) {
    if (dates.indexOf(r.date) < 0) { dates.push(r.date); }
    if (models.indexOf(r.gpu_model) < 0) { models.push(r.gpu_model); }
    cost[r.gpu_model + "|" + r.date] = parseFloat(r.usage_cost);
  });
  dates.sort(); models.sort();
  var palette = ["#2f5bea", "#12b76a", "#f79009", "#7a5af8", "#ee46bc", "#06aed4", "#667085"];
  var datasets = models.map(function (m, i) {
    return {
      label: m,
      data: dates.map(function (d) { return cost[m + "|" + d] || 0; }),
      backgroundColor: palette[i % palette.length],
      stack: "cost"
    };
  });
  canvas.dataset.rendered = "pending";
  new Chart(canvas, {
    type: "bar",
    data: { labels: dates, datasets: datasets },
    options: {
      animation: false,
      maintainAspectRatio: false,
      scales: { x: { stacked: true }, y: { stacked: true, beginAtZero: true } },
      plugins: { legend: { position: "bottom" } }
    }
  });
  canvas.dataset.rendered = "yes";
}());
