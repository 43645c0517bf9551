// The live chart (dashboard/live_chart.py). Python sends the tasks, the options and the route to read; this
// code asks the route for the run's events since its offset (0 at first, so a reload draws the whole run)
// and adds only their points. Per task: the loss above, validation accuracy and macro-F1 below, each a uPlot
// canvas (a new point redraws one canvas: no SVG, no re-layout of the page; plotly.js redrew its whole
// figure on every extendTraces, see docs/page-speed.md). Nothing is drawn when nothing is new, nothing is
// asked while the tab is hidden (Page Visibility API) or after the run has ended. The events that change
// the rest of the live view (the first step, an evaluation's change record, a plan change, the end of the
// run) are passed on to Streamlit as the "news" trigger, which reruns the live view's fragment: it need not
// rerun on a clock.

const ENDED = new Set(["finished", "stopped", "failed", "evaluated", "interrupted"]);
// Each panel's series after x: the names of the compared charts (charts.group_figure), colours from Python.
const PANELS = {
  loss: {title: "loss", series: ["train loss", "validation loss"], range: null},
  scores: {title: "validation accuracy and macro-F1", series: ["accuracy", "macro-F1"], range: [0, 1.02]},
};
const charts = new WeakMap(); // the component's element -> its LiveChart, kept while Streamlit keeps it
let uPlotLoading = null;

function loadUPlot(url) {
  if (window.uPlot) return Promise.resolve(window.uPlot);
  uPlotLoading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = () => resolve(window.uPlot);
    script.onerror = () => {
      uPlotLoading = null;
      reject(new Error("the chart code could not be loaded"));
    };
    document.head.appendChild(script);
  });
  return uPlotLoading;
}

function xsrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)_streamlit_xsrf=([^;]*)/);
  return match ? decodeURIComponent(match[1]) : "";
}

function element(tag, className, text) {
  const node = document.createElement(tag);
  node.className = className;
  if (text) node.textContent = text;
  return node;
}

const format = (u, value) => (value == null ? "–" : value.toFixed(3));

// One panel's columns for uPlot: x, then one array per series, null where a series has no point at that x.
class Columns {
  constructor(width) {
    this.data = Array.from({length: width + 1}, () => []);
  }

  // Set the values given (not undefined) at x: the row of that x if it exists, else a new row in x order
  // (events come in order, so this is nearly always the end).
  put(x, values) {
    const xs = this.data[0];
    let row = xs.length;
    while (row > 0 && xs[row - 1] > x) row--;
    if (row === 0 || xs[row - 1] !== x) {
      for (const column of this.data) column.splice(row, 0, null);
      xs[row] = x;
    } else {
      row -= 1;
    }
    values.forEach((value, i) => {
      if (value !== undefined) this.data[i + 1][row] = value;
    });
  }

  // The points of series i (0-based), without the rows where it has none.
  points(i) {
    const x = [], y = [];
    this.data[i + 1].forEach((value, row) => {
      if (value !== null) {
        x.push(this.data[0][row]);
        y.push(value);
      }
    });
    return {x, y};
  }
}

class LiveChart {
  constructor(root, trigger) {
    this.root = root;
    this.trigger = trigger;
    this.status = element("div", "fl-live-status");
    this.bar = element("progress", "fl-live-bar");
    this.bar.max = 1;
    this.bar.hidden = true;
    this.grid = element("div", "fl-live-grid");
    this.notes = element("div", "fl-live-marks");
    root.append(this.status, this.bar, this.grid, this.notes);
    this.shown = null; // what is drawn: run, x axis and smoothing
    this.generation = 0; // a newer show() makes an older one's pending work moot
    this.ready = false; // the panels of the current show() exist
    this.timer = null;
    this.polling = false;
    this.requests = 0; // polls sent
    this.finalRequest = null; // set when the page says the run has ended: the poll after which to stop
    this.plots = {};
    this.resize = new ResizeObserver(() => this.fit());
    this.resize.observe(this.grid);
    this.onVisibility = () => (document.hidden ? this.pause() : this.poll());
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  // Make the empty panels and read the run from its start, unless this run is already drawn with these
  // options: then Streamlit only re-sent the same data, and the chart goes on appending.
  async show(data) {
    const shown = JSON.stringify([data.run, data.x, data.smoothing]);
    if (shown === this.shown) {
      if (data.ended && !this.data.ended) this.lastLook(); // the page saw the run end (its summary says so)
      return;
    }
    this.shown = shown;
    const generation = ++this.generation;
    this.ready = false;
    this.pause();
    this.data = data;
    this.finalRequest = data.ended ? this.requests + 1 : null;
    this.offset = 0;
    this.ended = false;
    this.plans = 0; // plan events seen: the first is the plan the run started from, not a change
    this.stepped = false; // a step event seen
    this.marks = [];
    this.lastEpoch = null;
    let uPlot;
    try {
      uPlot = await loadUPlot(data.uplot_url);
    } catch (error) {
      this.shown = null; // the next rerun tries again
      this.say(`The live chart cannot be drawn: ${error.message}.`);
      return;
    }
    if (generation !== this.generation) return;
    for (const plot of Object.values(this.plots)) plot.panels.forEach((panel) => panel.chart.destroy());
    this.plots = {};
    this.grid.replaceChildren();
    this.notes.replaceChildren();
    this.grid.style.gridTemplateColumns = `repeat(${data.tasks.length}, minmax(0, 1fr))`;
    for (const task of data.tasks) this.plots[task] = this.taskPlot(uPlot, task);
    this.say("Waiting for the first step...");
    this.ready = true;
    this.poll();
  }

  // A task's two panels, their cursors in step (hovering one shows both panels' values at that x). The
  // element keeps what a test or a benchmark reads: its series' points, the plan marks, and how many draws.
  taskPlot(uPlot, task) {
    const box = element("div", "fl-live-plot");
    box.dataset.task = task;
    box.draws = 0;
    this.grid.append(box);
    const colors = this.data.colors;
    const plot = {box, smoothed: null, panels: []};
    Object.entries(PANELS).forEach(([name, panel], p) => {
      const columns = new Columns(panel.series.length);
      const series = panel.series.map((label, i) => {
        const evaluation = label !== "train loss";
        return {label, stroke: colors[2 * p + i], width: evaluation ? 2 : 1.5, spanGaps: true, value: format,
                dash: label === "macro-F1" ? [4, 4] : undefined,
                points: {show: evaluation, size: label === "macro-F1" ? 7 : 6,
                         fill: label === "macro-F1" ? "#fff" : colors[2 * p + i]}};
      });
      const options = {
        title: `${task}: ${panel.title}`, width: this.width(), height: name === "loss" ? 230 : 200,
        scales: {x: {time: false, range: () => this.xRange(plot)}, y: panel.range ? {range: panel.range} : {}},
        axes: [{label: name === "scores" ? this.data.x : undefined, size: name === "scores" ? 50 : 30}, {}],
        series: [{label: this.data.x, value: (u, v) => (v == null ? "–" : +v.toFixed(3))}, ...series],
        cursor: {sync: {key: `fl-live-${task}`}},
        hooks: {draw: [(u) => this.drawMarks(u, name === "loss")]},
      };
      const chart = new uPlot(options, columns.data, box);
      plot.panels.push({name, columns, chart, changed: false});
    });
    Object.defineProperty(box, "series", {
      get: () => Object.fromEntries(plot.panels.flatMap((panel) =>
        PANELS[panel.name].series.map((label, i) => [label, panel.columns.points(i)]))),
    });
    Object.defineProperty(box, "marks", {get: () => this.marks.map((m) => ({...m}))});
    return plot;
  }

  width() {
    const columns = this.data ? this.data.tasks.length : 1;
    const gap = (parseFloat(getComputedStyle(this.grid).columnGap) || 0) * (columns - 1);
    return Math.max(Math.floor((this.grid.clientWidth - gap) / columns), 240);
  }

  fit() {
    if (!this.ready) return;
    const width = this.width();
    for (const plot of Object.values(this.plots)) {
      for (const panel of plot.panels) {
        if (panel.chart.width !== width) panel.chart.setSize({width, height: panel.chart.height});
      }
    }
  }

  // Both panels of a task span the same x range: the run so far (plotly's matched axes did this before).
  xRange(plot) {
    const xs = plot.panels.flatMap((panel) => {
      const column = panel.columns.data[0];
      return column.length ? [column[0], column[column.length - 1]] : [];
    });
    if (!xs.length) return [0, 1];
    const low = Math.min(...xs), high = Math.max(...xs);
    return low === high ? [low - 0.5, high + 0.5] : [low, high];
  }

  // A freeze-schedule change ("plan" event): a dashed vertical line on both panels; on the loss panel, how
  // many parts are frozen from there on (their names are listed under the charts).
  drawMarks(u, named) {
    if (!this.marks.length) return;
    const ctx = u.ctx, top = u.bbox.top, bottom = u.bbox.top + u.bbox.height;
    ctx.save();
    ctx.beginPath();
    ctx.rect(u.bbox.left, top, u.bbox.width, u.bbox.height);
    ctx.clip(); // a mark outside the x range so far is not drawn over the axis
    ctx.strokeStyle = this.data.plan_color;
    ctx.fillStyle = this.data.plan_color;
    ctx.lineWidth = window.devicePixelRatio || 1;
    ctx.setLineDash([4 * ctx.lineWidth, 4 * ctx.lineWidth]);
    ctx.font = `${11 * ctx.lineWidth}px sans-serif`;
    for (const mark of this.marks) {
      const x = Math.round(u.valToPos(mark.x, "x", true));
      ctx.beginPath();
      ctx.moveTo(x, top);
      ctx.lineTo(x, bottom);
      ctx.stroke();
      if (named) ctx.fillText(`${mark.frozen.length} frozen`, x + 4 * ctx.lineWidth, top + 14 * ctx.lineWidth);
    }
    ctx.restore();
  }

  say(text) {
    this.status.textContent = text;
  }

  progress(p) {
    const fraction = p.total_steps ? Math.min(p.step / p.total_steps, 1) : 1;
    this.bar.hidden = false;
    this.bar.value = fraction;
    this.say(`step ${p.step} / ${p.total_steps} · epoch ${p.epoch.toFixed(2)} · ` +
             `${Math.round(p.examples_per_second)} examples/s · ETA ${Math.round(p.eta_seconds)} s`);
  }

  pause() {
    clearTimeout(this.timer);
    this.timer = null;
  }

  // The run has ended by the page's reading (its summary), which also covers a run whose process was killed
  // before it could log its end: read what is left with one request sent from now on, then ask no more.
  lastLook() {
    this.data = {...this.data, ended: true};
    this.finalRequest = this.requests + 1;
    this.poll();
  }

  async poll() {
    this.pause();
    if (this.polling || !this.ready || this.ended || document.hidden) return;
    this.polling = true;
    const generation = this.generation, request = ++this.requests;
    try {
      const url = new URL(this.data.events_url, window.location.href);
      url.searchParams.set("offset", String(this.offset));
      const response = await fetch(url, {headers: {"X-Xsrftoken": xsrfToken()}, cache: "no-store",
                                         credentials: "same-origin"});
      const body = await response.json();
      if (!response.ok) throw new Error(body.error || `status ${response.status}`);
      if (generation === this.generation) {
        this.append(body.events);
        this.offset = body.offset;
        if (this.finalRequest && request >= this.finalRequest) this.ended = true;
      }
    } catch (error) {
      this.say(`The live chart could not read the run's new points (${error.message}); it tries again.`);
    } finally {
      this.polling = false;
    }
    if (generation !== this.generation) {
      this.poll(); // a newer show() found this request under way and left its first poll to it
    } else if (!this.ended && !document.hidden) {
      this.timer = setTimeout(() => this.poll(), this.data.poll_ms);
    }
  }

  // Add the new events' points, then redraw each panel that got any (one setData), nothing otherwise.
  append(events) {
    const x = this.data.x, weight = this.data.smoothing;
    let progress = null, news = null;
    for (const e of events) {
      if (e.kind === "step" && this.plots[e.task]) {
        const plot = this.plots[e.task];
        const last = plot.smoothed;
        plot.smoothed = last === null || !weight ? e.loss : weight * last + (1 - weight) * e.loss;
        this.lastEpoch = e.epoch;
        this.put(plot, "loss", e[x], [plot.smoothed]);
        if (!this.stepped) news ??= "training"; // the run's setup is done: its cache and adapter notes exist
        this.stepped = true;
      } else if (e.kind === "eval") {
        for (const [task, m] of Object.entries(e.tasks)) {
          if (!this.plots[task]) continue;
          this.put(this.plots[task], "loss", e[x], [undefined, m.loss]);
          this.put(this.plots[task], "scores", e[x], [m.accuracy, m.macro_f1]);
        }
      } else if (e.kind === "change") {
        news = "change"; // logged right after its evaluation: the change map and the scores are both in
      } else if (e.kind === "progress") {
        progress = e;
      } else if (e.kind === "plan" && this.plans++ > 0) {
        this.marks.push({x: x === "step" ? e.step : this.lastEpoch ?? 0, frozen: e.frozen || []});
        this.listMarks();
        for (const plot of Object.values(this.plots)) plot.panels.forEach((panel) => (panel.changed = true));
        news = "plan";
      } else if (e.kind === "state" && ENDED.has(e.state)) {
        this.ended = true;
        news = e.state;
      }
    }
    for (const plot of Object.values(this.plots)) {
      if (!plot.panels.some((panel) => panel.changed)) continue;
      for (const panel of plot.panels) {  // both panels, so that they keep spanning the same x range
        panel.changed = false;
        panel.chart.setData(panel.columns.data);
      }
      plot.box.draws += 1;
    }
    if (progress) this.progress(progress);
    if (news && this.trigger) this.trigger("news", news);
  }

  put(plot, panelName, x, values) {
    const panel = plot.panels.find((p) => p.name === panelName);
    panel.columns.put(x, values);
    panel.changed = true;
  }

  listMarks() {
    this.notes.textContent = "Plan changes: " + this.marks.map((m) =>
      `${this.data.x} ${+m.x.toFixed(3)}: ${m.frozen.length ? m.frozen.join(", ") : "nothing"} frozen`).join("; ");
  }

  close() {
    this.pause();
    this.ready = false;
    this.generation += 1;
    this.resize.disconnect();
    for (const plot of Object.values(this.plots)) plot.panels.forEach((panel) => panel.chart.destroy());
    document.removeEventListener("visibilitychange", this.onVisibility);
  }
}

export default function (component) {
  const {data, parentElement, setTriggerValue} = component;
  let chart = charts.get(parentElement);
  if (!chart) {
    chart = new LiveChart(parentElement, setTriggerValue);
    charts.set(parentElement, chart);
  }
  chart.show(data);
  return () => {
    chart.close();
    charts.delete(parentElement);
  };
}
