// The dashboard's own script (no inline scripts: the CSP allows only files of /ui/static).
// Live events of a run over SSE, the step timeline bars, the usage, loss and federated
// metric charts (uPlot).
(function () {
  "use strict";

  function layoutBars(root) {
    root.querySelectorAll(".bar-fill").forEach(function (el) {
      el.style.marginLeft = (parseFloat(el.dataset.offset) || 0) + "%";
      el.style.width = (parseFloat(el.dataset.width) || 0.5) + "%";
    });
    root.querySelectorAll(".indent").forEach(function (el) {
      el.style.paddingLeft = (parseInt(el.dataset.depth, 10) || 0) * 14 + "px";
    });
  }

  function cell(text, code) {
    var td = document.createElement("td");
    if (code) {
      var c = document.createElement("code");
      c.textContent = text;
      td.appendChild(c);
    } else {
      td.textContent = text;
    }
    return td;
  }

  function followEvents() {
    var table = document.getElementById("events");
    if (!table || !window.EventSource) return;
    var state = document.getElementById("live-state");
    var body = table.querySelector("tbody");
    var seen = parseInt(table.dataset.after, 10) || 0;
    var initial = seen;
    var url = table.dataset.stream + "?after=" + seen;
    var source = new EventSource(url);
    if (state) state.textContent = state.dataset.live;
    function onEvent(ev) {
      var data = {};
      try { data = JSON.parse(ev.data); } catch (e) { return; }
      if (typeof data.seq !== "number" || data.seq <= seen) return;
      seen = data.seq;
      var shown = Object.assign({}, data);
      delete shown.seq; delete shown.ts; delete shown.type;
      var tr = document.createElement("tr");
      tr.className = "new";
      tr.appendChild(cell(String(data.seq)));
      tr.appendChild(cell(new Date(data.ts * 1000).toISOString().replace("T", " ").slice(0, 19)));
      tr.appendChild(cell(data.type, true));
      tr.appendChild(cell(JSON.stringify(shown), true));
      body.appendChild(tr);
      // Someone answered the waiting step (here or elsewhere): its form is stale.
      if (data.type === "input_received" || data.type === "run_cancelled") {
        var waiting = document.getElementById("waiting");
        if (waiting) waiting.remove();
      }
    }
    source.onmessage = onEvent;
    source.addEventListener("end", function (ev) {
      source.close();
      var end = {};
      try { end = JSON.parse(ev.data); } catch (e) { end = {}; }
      if (["succeeded", "failed", "cancelled"].indexOf(end.status) >= 0) {
        var cancel = document.getElementById("cancel-form");
        if (cancel) cancel.remove();
      }
      if (state) state.textContent = state.dataset.ended;
      // The run moved on while the page was open: show its steps' final state.
      if (seen > initial && window.htmx && table.dataset.steps) {
        window.htmx.ajax("GET", table.dataset.steps, { target: "#steps", swap: "outerHTML" });
      }
    });
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED && state) state.textContent = state.dataset.ended;
    };
  }

  function xRange(xs, pad) {
    var lo = Math.min.apply(null, xs), hi = Math.max.apply(null, xs);
    return [lo - pad, hi + pad];
  }

  // A uPlot line chart from a JSON block: {days | steps, series: {name: [...]}, labels,
  // xlabel (optional: the x values' legend name)}.
  function chart(holderId, dataId) {
    var holder = document.getElementById(holderId);
    var raw = document.getElementById(dataId);
    if (!holder || !raw || !window.uPlot) return;
    var d = JSON.parse(raw.textContent);
    var time = Array.isArray(d.days);
    var xs = time
      ? d.days.map(function (day) { return Date.parse(day + "T00:00:00Z") / 1000; })
      : d.steps;
    var colors = ["#2563eb", "#16a34a", "#d97706", "#9333ea"];
    var names = Object.keys(d.series);
    var series = [d.xlabel ? { label: d.xlabel } : {}].concat(names.map(function (m, i) {
      return { label: d.labels[m], stroke: colors[i % colors.length], width: 2,
        points: { show: true }, spanGaps: true };
    }));
    var data = [xs].concat(names.map(function (m) { return d.series[m]; }));
    new window.uPlot({ width: Math.min(holder.clientWidth || 900, 1100), height: 320,
      // Steps and rounds are whole numbers: no ticks between them.
      series: series, axes: [time ? {} : { incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500, 1000, 2000, 5000] }, {}],
      // Pad the x range (half a day, or half a step): one point alone otherwise
      // stretches the axis over years.
      scales: { x: { time: time, auto: false, range: xRange(xs, time ? 43200 : 0.5) } } },
      data, holder);
  }

  document.addEventListener("DOMContentLoaded", function () {
    layoutBars(document);
    followEvents();
    chart("usage-chart", "usage-data");
    chart("loss-chart", "loss-data");
    chart("fed-loss-chart", "fed-loss-data");
    chart("fed-accuracy-chart", "fed-accuracy-data");
  });
  document.addEventListener("htmx:afterSwap", function (ev) { layoutBars(ev.target || document); });
})();
