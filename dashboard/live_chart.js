// The live chart (dashboard/live_chart.py). Python sends empty figures (one per task) and the route to read;
// this code asks the route for the run's events since its offset (0 at first, so a reload draws the whole
// run) and adds only their points to the drawn traces (Plotly.extendTraces). No Streamlit rerun is needed
// for a new point, nothing is redrawn when nothing is new, and nothing is asked while the tab is hidden
// (Page Visibility API) or after the run has ended.

const ENDED = new Set(["finished", "stopped", "failed", "evaluated", "interrupted"]);
const LOSS = 0, VALIDATION_LOSS = 1, ACCURACY = 2, MACRO_F1 = 3; // trace order of charts.task_figure
const charts = new WeakMap(); // the component's element -> its LiveChart, kept while Streamlit keeps it
let plotlyLoading = null;

function loadPlotly(url) {
  if (window.Plotly) return Promise.resolve(window.Plotly);
  plotlyLoading ??= new Promise((resolve, reject) => {
    const script = document.createElement("script");
    script.src = url;
    script.onload = () => resolve(window.Plotly);
    script.onerror = () => {
      plotlyLoading = null;
      reject(new Error("plotly.js could not be loaded"));
    };
    document.head.appendChild(script);
  });
  return plotlyLoading;
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

// A vertical mark for a freeze-schedule change ("plan" event): a dotted line through both panels, and
// between them how many parts are frozen from there on (the names in its hover).
function planMarks(plans) {
  const shapes = plans.map((p) => ({type: "line", xref: "x", x0: p.x, x1: p.x, yref: "paper", y0: 0, y1: 1,
                                    line: {dash: "dot", width: 1.5, color: "#666"}}));
  const annotations = plans.map((p) => ({xref: "x", x: p.x, yref: "paper", y: 0.5, showarrow: false,
                                         text: `${p.frozen.length} frozen`, font: {size: 11, color: "#444"},
                                         bgcolor: "rgba(255,255,255,0.8)",
                                         hovertext: p.frozen.length ? p.frozen.join(", ") : "nothing frozen"}));
  return {shapes, annotations};
}

class LiveChart {
  constructor(root) {
    this.root = root;
    this.status = element("div", "fl-live-status");
    this.bar = element("progress", "fl-live-bar");
    this.bar.max = 1;
    this.bar.hidden = true;
    this.grid = element("div", "fl-live-grid");
    root.append(this.status, this.bar, this.grid);
    this.shown = null; // what is drawn: run, x axis and smoothing
    this.generation = 0; // a newer show() makes an older one's pending work moot
    this.ready = false; // the figures of the current show() are drawn
    this.timer = null;
    this.polling = false;
    this.onVisibility = () => (document.hidden ? this.pause() : this.poll());
    document.addEventListener("visibilitychange", this.onVisibility);
  }

  // Draw the empty figures and read the run from its start, unless this run is already drawn with these
  // options: then Streamlit only re-sent the same data, and the chart goes on appending.
  async show(data) {
    const shown = JSON.stringify([data.run, data.x, data.smoothing]);
    if (shown === this.shown) return;
    this.shown = shown;
    const generation = ++this.generation;
    this.ready = false;
    this.pause();
    this.data = data;
    this.offset = 0;
    this.ended = false;
    this.plans = [];
    this.lastEpoch = null;
    this.smoothed = {};
    let Plotly;
    try {
      Plotly = await loadPlotly(data.plotly_url);
    } catch (error) {
      this.say(`The live chart cannot be drawn: ${error.message}.`);
      return;
    }
    if (generation !== this.generation) return;
    this.Plotly = Plotly;
    this.plots = {};
    this.grid.replaceChildren();
    this.grid.style.gridTemplateColumns = `repeat(${Object.keys(data.figures).length}, minmax(0, 1fr))`;
    for (const [task, figure] of Object.entries(data.figures)) {
      const plot = element("div", "fl-live-plot");
      plot.dataset.task = task;
      this.grid.append(plot);
      this.plots[task] = plot;
      this.smoothed[task] = null;
      const layout = {...figure.layout};
      for (const axis of ["yaxis", "yaxis2"]) layout[axis] = {...layout[axis], automargin: true}; // tick labels fit
      await Plotly.newPlot(plot, figure.data, layout, {responsive: true, displaylogo: false});
    }
    this.say("Waiting for the first step...");
    this.ready = true;
    this.poll();
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

  async poll() {
    this.pause();
    if (this.polling || !this.ready || this.ended || document.hidden) return;
    this.polling = true;
    const generation = this.generation;
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

  // Add the new events' points: one extendTraces per chart that has any, nothing otherwise.
  append(events) {
    const x = this.data.x, weight = this.data.smoothing;
    const added = {}, plans = [];
    let progress = null;
    const add = (task, trace, xValue, yValue) => {
      const points = (added[task] ??= new Map());
      if (!points.has(trace)) points.set(trace, {x: [], y: []});
      points.get(trace).x.push(xValue);
      points.get(trace).y.push(yValue);
    };
    for (const e of events) {
      if (e.kind === "step" && this.plots[e.task]) {
        const last = this.smoothed[e.task];
        const value = last === null || !weight ? e.loss : weight * last + (1 - weight) * e.loss;
        this.smoothed[e.task] = value;
        this.lastEpoch = e.epoch;
        add(e.task, LOSS, e[x], value);
      } else if (e.kind === "eval") {
        for (const [task, m] of Object.entries(e.tasks)) {
          if (!this.plots[task]) continue;
          add(task, VALIDATION_LOSS, e[x], m.loss);
          add(task, ACCURACY, e[x], m.accuracy);
          add(task, MACRO_F1, e[x], m.macro_f1);
        }
      } else if (e.kind === "progress") {
        progress = e;
      } else if (e.kind === "plan") {
        plans.push({x: x === "step" ? e.step : this.lastEpoch ?? 0, frozen: e.frozen || []});
      } else if (e.kind === "state" && ENDED.has(e.state)) {
        this.ended = true;
      }
    }
    for (const [task, points] of Object.entries(added)) {
      const traces = [...points.keys()];
      this.Plotly.extendTraces(this.plots[task], {x: traces.map((t) => points.get(t).x),
                                                  y: traces.map((t) => points.get(t).y)}, traces);
    }
    if (plans.length) {
      this.plans.push(...plans);
      for (const [task, figure] of Object.entries(this.data.figures)) {
        const marks = planMarks(this.plans);
        this.Plotly.relayout(this.plots[task], {shapes: marks.shapes,
                                                annotations: [...(figure.layout.annotations || []), ...marks.annotations]});
      }
    }
    if (progress) this.progress(progress);
  }

  close() {
    this.pause();
    this.ready = false;
    this.generation += 1;
    document.removeEventListener("visibilitychange", this.onVisibility);
  }
}

export default function (component) {
  const {data, parentElement} = component;
  let chart = charts.get(parentElement);
  if (!chart) {
    chart = new LiveChart(parentElement);
    charts.set(parentElement, chart);
  }
  chart.show(data);
  return () => {
    chart.close();
    charts.delete(parentElement);
  };
}
