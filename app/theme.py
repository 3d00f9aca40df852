"""The app's CSS (legend, swatches, progress bar) and the page script that remembers the tab."""

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
/* small photos fill the view (the browser scales the Tag photo; Review's is scaled on the server) */
#tag-picture img, #review-picture img { width: 100%; height: 100%; object-fit: contain; }
#tag-classes label.slr-highlight { outline: 2px solid var(--color-accent); outline-offset: 1px; }
.loss-chart.empty { color: var(--body-text-color-subdued); padding: 8px; }
.job-progress span { position: absolute; inset: 0; text-align: center; line-height: 22px; font-size: 0.85em; }
"""

# Page script, run once: remembers the chosen tab (restored after a reload with the project). The
# Tag screen's keys are app/static/tagger.js, the painter's app/static/painter.js.
SHORTCUTS_JS = """
() => {
  const TAB_IDS = __TAB_IDS__;
  document.addEventListener("click", (event) => {
    const tab = event.target.closest && event.target.closest("#tabs button[role=tab]");
    if (!tab) return;
    const id = TAB_IDS[tab.textContent.trim()];
    if (id) { try { localStorage.setItem("slrnet.tab", id); } catch (e) {} }
  });
}
""".replace("__TAB_IDS__", json.dumps({label: tab_id for tab_id, label in TABS.items()}))
