/* HARMON-E console: load management.
 * - form fields shown by a choice (data-show-when="name=value": meter kind, wiring);
 * - the Load management tab, live: each node's values, the connector table and the summary
 *   are HTML rendered by the server and placed here; the chart (uPlot, served by HARMON-E
 *   itself) plots the series the server sends, per phase of the chosen node.
 * Colours come from CSS custom properties, so the chart follows light and dark mode. */
(function () {
  "use strict";

  function parseHTML(html) {
    var t = document.createElement("template");
    t.innerHTML = html.trim();
    return t.content;
  }

  // -- fields that depend on a choice ------------------------------------------------------
  document.querySelectorAll("form").forEach(function (form) {
    var dependents = form.querySelectorAll("[data-show-when]");
    if (!dependents.length) return;
    function update() {
      dependents.forEach(function (el) {
        var rule = el.getAttribute("data-show-when").split("=");
        var checked = form.querySelector('input[name="' + rule[0] + '"]:checked');
        var options = rule[1].split("|");
        el.hidden = !checked || options.indexOf(checked.value) === -1;
      });
    }
    form.addEventListener("change", update);
    update();
  });

  var charts = document.getElementById("lm-charts");
  if (!charts) return;

  // -- live status indicator ---------------------------------------------------------------
  function liveStatus(state) {
    var el = document.querySelector("[data-live-status]");
    if (!el) return;
    el.classList.toggle("is-live", state === "live");
    el.classList.toggle("is-down", state === "down");
    el.querySelector("[data-live-text]").textContent =
      { live: "Live", connecting: "Reconnecting…", down: "Not updating" }[state];
  }

  // -- chart -----------------------------------------------------------------------------
  var nodeSelect = document.getElementById("lm-chart-node");
  var figures = Array.prototype.slice.call(charts.querySelectorAll("figure.lm-chart"));
  var plots = [];
  var data = { resolution: "round", t: [], nodes: {} };
  var range = 900;
  var refetchTimer = null;
  var SERIES = [
    ["limit", "Limit in force", "--lm-limit", [6, 4]],
    ["load", "Total load", "--lm-load", null],
    ["chargers", "Charging stations", "--lm-chargers", null],
    ["building", "Building", "--lm-building", null]
  ];

  function css(name) {
    return getComputedStyle(document.documentElement).getPropertyValue(name).trim();
  }

  function amps(v) {
    return v === null || v === undefined ? "–" : (Math.round(v * 10) / 10).toFixed(1) + " A";
  }

  function columns(phase) {
    var node = data.nodes[nodeSelect.value];
    var empty = data.t.map(function () { return null; });
    if (!node) return [data.t, empty, empty, empty, empty];
    return [data.t, node.limit, node.load[phase], node.chargers[phase], node.building[phase]];
  }

  function options(width) {
    var text = css("--muted");
    var grid = css("--border");
    var axis = {
      stroke: text,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1 },
      font: "12px " + css("--sans"),
      labelFont: "600 12px " + css("--sans")
    };
    return {
      width: width,
      height: 220,
      tzDate: function (ts) { return uPlot.tzDate(new Date(ts * 1e3), "Etc/UTC"); },
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: {
        x: { time: true },
        y: { range: function (u, min, max) { return [0, Math.max(1, (max || 0) * 1.12)]; } }
      },
      axes: [
        Object.assign({ label: "Time (UTC)", values: function (u, ticks) {
          // 24-hour UTC times, with seconds only when the range is a few minutes
          var seconds = range <= 900;
          return ticks.map(function (ts) {
            return new Date(ts * 1e3).toISOString().slice(11, seconds ? 19 : 16);
          });
        } }, axis),
        Object.assign({ label: "Current (A)", size: 56, values: function (u, ticks) {
          return ticks.map(function (v) { return v + " A"; });
        } }, axis)
      ],
      series: [{}].concat(SERIES.map(function (s) {
        var line = { label: s[1], stroke: css(s[2]), width: s[0] === "load" ? 2.5 : 2, spanGaps: false };
        if (s[3]) line.dash = s[3];
        if (s[0] === "limit") line.paths = uPlot.paths.stepped({ align: 1 });
        return line;
      }))
    };
  }

  function describe(figure, cols) {
    var last = cols[0].length - 1;
    var now = figure.querySelector("[data-now]");
    figure.dataset.points = String(cols[0].length);
    if (last < 0) {
      now.textContent = "No data yet.";
      return;
    }
    var names = ["limit", "load", "chargers", "building"];
    var parts = [];
    names.forEach(function (name, i) {
      var v = cols[i + 1][last];
      figure.dataset[name] = v === null || v === undefined ? "" : String(v);
    });
    parts.push("Limit " + amps(cols[1][last]));
    parts.push("load " + amps(cols[2][last]));
    parts.push("charging " + amps(cols[3][last]));
    parts.push("building " + amps(cols[4][last]));
    now.textContent = "Latest: " + parts.join(" · ");
  }

  function draw(rebuild) {
    figures.forEach(function (figure, phase) {
      var cols = columns(phase);
      var holder = figure.querySelector(".lm-plot");
      if (rebuild && plots[phase]) {
        plots[phase].destroy();
        plots[phase] = null;
      }
      if (!plots[phase]) {
        plots[phase] = new uPlot(options(Math.max(200, holder.clientWidth)), cols, holder);
      } else {
        plots[phase].setData(cols);
      }
      describe(figure, cols);
    });
  }

  function merge(points) {
    var start = data.t.length;
    var known = Object.keys(data.nodes);
    Object.keys(points.nodes).forEach(function (id) {
      if (!data.nodes[id]) {
        var pad = function () { return data.t.map(function () { return null; }); };
        data.nodes[id] = { limit: pad(), load: [pad(), pad(), pad()], chargers: [pad(), pad(), pad()], building: [pad(), pad(), pad()] };
        known.push(id);
      }
    });
    var last = start ? data.t[start - 1] : -Infinity;
    points.t.forEach(function (t, i) {
      if (t <= last) return;
      data.t.push(t);
      known.forEach(function (id) {
        var from = points.nodes[id];
        var into = data.nodes[id];
        into.limit.push(from ? from.limit[i] : null);
        ["load", "chargers", "building"].forEach(function (key) {
          for (var p = 0; p < 3; p++) into[key][p].push(from ? from[key][p][i] : null);
        });
      });
    });
    // Keep the chosen range: drop points older than it.
    var newest = data.t.length ? data.t[data.t.length - 1] : 0;
    var drop = 0;
    while (drop < data.t.length && data.t[drop] < newest - range) drop++;
    if (drop) {
      data.t.splice(0, drop);
      Object.keys(data.nodes).forEach(function (id) {
        var n = data.nodes[id];
        n.limit.splice(0, drop);
        ["load", "chargers", "building"].forEach(function (key) {
          for (var p = 0; p < 3; p++) n[key][p].splice(0, drop);
        });
      });
    }
  }

  function fetchSeries() {
    return fetch(charts.dataset.series + "?seconds=" + range, { credentials: "same-origin" })
      .then(function (r) {
        if (!r.ok) throw new Error("HTTP " + r.status);
        return r.json();
      })
      .then(function (fresh) {
        data = fresh;
        charts.dataset.resolution = fresh.resolution;
        draw(false);
      });
  }

  document.querySelectorAll("[data-range]").forEach(function (button) {
    button.addEventListener("click", function () {
      range = parseInt(button.getAttribute("data-range"), 10);
      document.querySelectorAll("[data-range]").forEach(function (b) {
        b.setAttribute("aria-pressed", String(b === button));
      });
      fetchSeries();
    });
  });
  nodeSelect.addEventListener("change", function () { draw(false); });

  if (window.ResizeObserver) {
    new ResizeObserver(function () {
      figures.forEach(function (figure, phase) {
        var holder = figure.querySelector(".lm-plot");
        if (plots[phase] && holder.clientWidth) {
          plots[phase].setSize({ width: Math.max(200, holder.clientWidth), height: 220 });
        }
      });
    }).observe(charts);
  }
  var scheme = window.matchMedia("(prefers-color-scheme: dark)");
  if (scheme.addEventListener) scheme.addEventListener("change", function () { draw(true); });

  // -- live stream -------------------------------------------------------------------------
  var changed = document.querySelector("[data-lm-changed]");
  var version = charts.dataset.version;

  function place(selector, html) {
    var el = document.querySelector(selector);
    if (el) el.replaceChildren(parseHTML(html));
  }

  function openStream() {
    var after = data.t.length ? data.t[data.t.length - 1] : null;
    var url = charts.dataset.stream + (after !== null ? "?after=" + encodeURIComponent(after) : "");
    var source = new EventSource(url);
    source.onopen = function () { liveStatus("live"); };
    source.onerror = function () {
      if (source.readyState === EventSource.CLOSED) {
        liveStatus("down");
        setTimeout(function () { window.location.reload(); }, 1500);
      } else {
        liveStatus("connecting");
      }
    };
    source.addEventListener("status", function (event) {
      var d = JSON.parse(event.data);
      Object.keys(d.nodes).forEach(function (id) {
        place('[data-node-live="' + CSS.escape(id) + '"]', d.nodes[id]);
      });
      place("#lm-connectors", d.connectors);
      place("[data-lm-summary]", d.summary);
      if (changed) changed.hidden = d.version === version;
    });
    source.addEventListener("samples", function (event) {
      var points = JSON.parse(event.data);
      if (data.resolution === "round") {
        merge(points);
        draw(false);
      } else if (!refetchTimer) {
        // One point per minute: ask for the summaries again, at most once a minute.
        refetchTimer = setTimeout(function () { refetchTimer = null; fetchSeries(); }, 60000);
      }
    });
    source.addEventListener("gone", function () {
      source.close();
      liveStatus("down");
      var box = document.createElement("div");
      box.className = "alert alert-error";
      box.setAttribute("role", "alert");
      box.textContent = "This site no longer exists.";
      document.getElementById("main").prepend(box);
    });
    window.addEventListener("pagehide", function () { source.close(); });
  }

  fetchSeries().then(openStream, function () {
    liveStatus("down");
    openStream();
  });
})();
