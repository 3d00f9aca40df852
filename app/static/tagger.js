// The Tag screen's keyboard: type-to-filter over the class list, keys 1-9, Enter to save.
//
// While the Tag screen is visible and focus is not in another text field:
//   letters, digits after a letter, space, "-"  type into the class filter (shown in the search box);
//     the best match (name starting with the filter, else containing it) is highlighted
//   ↓ / ↑        move the highlight among the matches
//   Enter        with a filter: toggle the highlighted class and clear the filter;
//                without one: save and go to the next untagged image
//   Shift+Enter  save and stay · ← previous image · → skip to the next untagged image
//   1-9          toggle the k-th class (no filter typed) · Escape clear the filter
// The filter clears whenever another image is shown. Keys are taken in the capture phase, so
// Enter or a digit never also toggles the checkbox that has focus.
(() => {
  "use strict";
  let highlight = 0;

  const visible = () => {
    const view = document.getElementById("tag-view");
    return view && view.offsetParent !== null;
  };
  const search = () => document.querySelector("#tag-search textarea, #tag-search input");
  const labels = () => Array.from(document.querySelectorAll("#tag-classes label"));
  const nameOf = (label) => label.textContent.replace(/^\s*\d\s*·\s*/, "").trim().toLowerCase();
  const click = (id) => { const b = document.getElementById(id); if (b) b.click(); };

  function matches(query) {
    const all = labels();
    if (!query) return all;
    const starts = all.filter((l) => nameOf(l).startsWith(query));
    const inside = all.filter((l) => !nameOf(l).startsWith(query) && nameOf(l).includes(query));
    return [...starts, ...inside];
  }

  function show() {
    const box = search();
    const query = box ? box.value.trim().toLowerCase() : "";
    const found = matches(query);
    highlight = Math.max(0, Math.min(highlight, found.length - 1));
    for (const label of labels()) {
      label.style.display = !query || found.includes(label) ? "" : "none";
      label.classList.toggle("slr-highlight", Boolean(query) && label === found[highlight]);
    }
    if (query && found[highlight]) found[highlight].scrollIntoView({ block: "nearest" });
    return found;
  }

  function setFilter(text) {
    const box = search();
    if (!box) return;
    box.value = text;
    box.dispatchEvent(new Event("input", { bubbles: true }));  // Gradio's copy of the value follows
    highlight = 0;
    show();
  }

  document.addEventListener("input", (event) => {
    if (event.target.closest && event.target.closest("#tag-search")) { highlight = 0; show(); }
  });

  // a new image (the name in its title changed): the filter starts empty
  let shownName = null;
  // The boxes the person ticked or unticked on this image since its last save, by class id. A
  // render of the same image that was on its way when they clicked (the project's and the tab's
  // both show it) would set the boxes back to the stored tags; the person's ticks are put back.
  const ticked = new Map();
  new MutationObserver(() => {
    const strong = document.querySelector("#tag-title strong");
    const name = strong ? strong.textContent : null;
    if (name === shownName) return;
    shownName = name;
    ticked.clear();
    if (search() && search().value) setFilter("");
  }).observe(document.documentElement, { childList: true, subtree: true, characterData: true });

  document.addEventListener("change", (event) => {
    const box = event.target;
    if (box && box.type === "checkbox" && box.closest && box.closest("#tag-classes")) {
      ticked.set(box.name, box.checked);
    }
  });
  document.addEventListener("click", (event) => {  // saved: the stored tags are the ticks now
    if (event.target && event.target.closest && event.target.closest("#tag-save, #tag-save-next")) {
      setTimeout(() => ticked.clear(), 0);  // after TICKED_JS has read the boxes
    }
  }, true);
  setInterval(() => {
    if (!ticked.size || !visible()) return;
    for (const box of document.querySelectorAll("#tag-classes input[type=checkbox]")) {
      if (ticked.has(box.name) && box.checked !== ticked.get(box.name)) box.click();
    }
  }, 150);

  document.addEventListener("keydown", (event) => {
    if (!visible() || event.ctrlKey || event.metaKey || event.altKey) return;
    const target = event.target;
    const inSearch = Boolean(target && target.closest && target.closest("#tag-search"));
    const typing = !inSearch && target && (target.tagName === "TEXTAREA" ||
      (target.tagName === "INPUT" && !["checkbox", "radio"].includes(target.type)));
    if (typing) return;
    const box = search();
    const query = box ? box.value : "";
    const used = () => { event.preventDefault(); event.stopPropagation(); };
    const key = event.key;
    if (key === "Enter") {
      used();
      if (event.shiftKey) { click("tag-save"); return; }
      if (query.trim()) {
        const found = show();
        const label = found[highlight];
        if (label) label.querySelector("input").click();
        setFilter("");
      } else {
        click("tag-save-next");
      }
    } else if (key === "Escape") {
      if (query) { setFilter(""); used(); }
    } else if (key === "ArrowDown" || key === "ArrowUp") {
      if (!query.trim()) return;
      highlight += key === "ArrowDown" ? 1 : -1;
      show(); used();
    } else if (inSearch) {
      return; // the search box types for itself
    } else if (key === "ArrowLeft") {
      click("tag-previous"); used();
    } else if (key === "ArrowRight") {
      click("tag-next"); used();
    } else if (key === "Backspace") {
      if (query) { setFilter(query.slice(0, -1)); used(); }
    } else if (!query && key >= "1" && key <= "9") {
      const boxes = document.querySelectorAll("#tag-classes input[type=checkbox]");
      const box9 = boxes[Number(key) - 1];
      if (box9) { box9.click(); used(); }
    } else if (key === " " && target && target.type === "checkbox") {
      return; // Space ticks the focused box
    } else if (key.length === 1 && (/[\p{L}\p{N}\-_]/u.test(key) || (key === " " && query))) {
      setFilter(query + key.toLowerCase()); used();
    }
  }, true);
})();
