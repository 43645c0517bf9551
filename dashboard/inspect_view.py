"""A finished run up close: confusion matrices, where learning happened, and 'Try it' on a typed sentence."""

from __future__ import annotations

import streamlit as st

from dashboard import change_view, charts, resources, runs_view

KEYS = ["inspect_run", "try_text"]  # widget values kept while the tab is closed


def inspect_section() -> None:
    runs = [r for r in resources.run_store().list() if r.has_weights()]
    if not runs:
        st.info("No finished run yet. Train one first.")
        return
    by_id = {r.id: r for r in runs}
    rid = st.selectbox("Run", list(by_id), key="inspect_run", format_func=lambda r: by_id[r].name)
    run = by_id[rid]
    summary = run.summary()
    if note := runs_view.processes_note(summary):
        st.caption(note)
    tasks = summary.get("tasks", {})
    for column, (task, m) in zip(st.columns(max(1, len(tasks))), tasks.items()):
        column.plotly_chart(charts.confusion_figure(m["labels"], m["confusion"],
                                                    f"{task}: accuracy {m['accuracy']:.3f}"), key=f"cm:{task}")
    st.markdown("**Where learning happened**: how far each part's weights moved from where they started.")
    change_view.change_section(run, run.events(), key="inspect:change")
    st.markdown("**Try it**: type a sentence and see what each head predicts.")
    text = st.text_input("Sentence", key="try_text", placeholder="The new phone's battery died before lunch.")
    if st.button("Predict", key="predict", disabled=not text.strip()):
        from core.checkpoints import predict

        try:
            model, tokenizer = resources.trained_model(str(run.path))
        except (OSError, ValueError) as error:  # RunError: weights that are not safetensors, or damaged
            st.error(f"This run's model cannot be loaded: {error}")
            return
        result = predict(model, tokenizer, [text])[0]
        for column, (task, ranked) in zip(st.columns(len(result)), result.items()):
            column.markdown(f"**{task}: {ranked[0][0]}** ({ranked[0][1]:.0%})")
            column.dataframe([{"label": label, "probability": round(p, 3)} for label, p in ranked], hide_index=True)
