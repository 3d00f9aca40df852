"""The app's CSS (legend, swatches, progress bar) and its keyboard shortcuts for tagging."""

from __future__ import annotations

import json

from app.tabs import TABS

CSS = """
#header { align-items: center; }
#title h2 { margin: 0; }
.palette { display: flex; flex-wrap: wrap; gap: 6px; }
.chip { display: inline-flex; align-items: center; gap: 4px; padding: 2px 8px;
        border: 1px solid var(--border-color-primary); border-radius: 12px; font-size: 0.9em; }
.swatch { display: inline-block; width: 14px; height: 14px; border-radius: 3px;
          border: 1px solid rgba(0, 0, 0, 0.3); vertical-align: middle; }
.swatch-unknown { background: repeating-linear-gradient(45deg, #bbb 0 3px, #fff 3px 6px); }
table.legend { width: 100%; border-collapse: collapse; font-size: 0.9em; }
table.legend td, table.legend th { padding: 2px 6px; text-align: left; }
.job-progress { position: relative; height: 22px; border-radius: 6px; overflow: hidden;
                background: var(--background-fill-secondary); border: 1px solid var(--border-color-primary); }
.job-progress-fill { height: 100%; background: var(--color-accent); }
.job-progress.failed .job-progress-fill { background: #c0392b; }
.job-progress.cancelled .job-progress-fill, .job-progress.interrupted .job-progress-fill { background: #999; }
#tag-classes { max-height: 420px; overflow-y: auto; }
.loss-chart.empty { color: var(--body-text-color-subdued); padding: 8px; }
.job-progress span { position: absolute; inset: 0; text-align: center; line-height: 22px; font-size: 0.85em; }
"""

# Page script, run once: remembers the chosen tab (restored after a reload with the project), the
# Tag screen's class search, and its shortcuts, active while it is visible and focus is not in a
# text field: 1-9 toggle the k-th class, Enter saves and moves to the next untagged image, s
# saves, n skips to the next untagged image, p goes back to the previous image.
SHORTCUTS_JS = """
() => {
  const TAB_IDS = __TAB_IDS__;
  document.addEventListener("click", (event) => {
    const tab = event.target.closest && event.target.closest("#tabs button[role=tab]");
    if (!tab) return;
    const id = TAB_IDS[tab.textContent.trim()];
    if (id) { try { localStorage.setItem("slrnet.tab", id); } catch (e) {} }
  });
  document.addEventListener("input", (event) => {
    if (!event.target.closest || !event.target.closest("#tag-search")) return;
    const query = event.target.value.trim().toLowerCase();
    document.querySelectorAll("#tag-classes label").forEach((label) => {
      label.style.display = !query || label.textContent.toLowerCase().includes(query) ? "" : "none";
    });
  });
  // capture phase: the page decides first, so Enter or a digit never also toggles the checkbox
  // that has focus (Gradio's own key handling on it never sees a key used here)
  document.addEventListener("keydown", (event) => {
    const view = document.getElementById("tag-view");
    if (!view || view.offsetParent === null) return;
    const target = event.target;
    const typing = target && (target.tagName === "TEXTAREA" ||
      (target.tagName === "INPUT" && target.type !== "checkbox"));
    if (typing || event.ctrlKey || event.metaKey || event.altKey) return;
    const click = (id) => { const b = document.getElementById(id); if (b) { b.click(); } };
    const used = () => { event.preventDefault(); event.stopPropagation(); };
    if (event.key >= "1" && event.key <= "9") {
      const boxes = document.querySelectorAll("#tag-classes input[type=checkbox]");
      const box = boxes[Number(event.key) - 1];
      if (box) { box.click(); used(); }
    } else if (event.key === "Enter") {
      click("tag-save-next"); used();
    } else if (event.key === "s") {
      click("tag-save"); used();
    } else if (event.key === "n") {
      click("tag-next"); used();
    } else if (event.key === "p") {
      click("tag-previous"); used();
    }
  }, true);
}
""".replace("__TAB_IDS__", json.dumps({label: tab_id for tab_id, label in TABS.items()}))
