"use strict";
// New-audit form: show the fields of the chosen model selector and schedule kind, and list the CAM layers of
// the model the selector names now (camLayers comes from form.js, loaded before this file).

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("audit-form");
  if (!form) return;
  const rows = [...form.querySelectorAll(".field-row[data-when]")];
  const modelName = form.querySelector("#model_name");
  const cam = form.querySelector("#cam");
  const policy = form.querySelector("#targeted");
  const targetClass = form.querySelector("#target_class");
  const cache = new Map();
  let wanted = cam.dataset.selected || "auto";

  const chosen = (name) => form.querySelector(`input[name="${name}"]:checked`)?.value;
  const showRows = () => rows.forEach((row) => {
    const [name, value] = row.dataset.when.split("=");
    row.hidden = chosen(name) !== value;
  });

  /** The id of the model whose layers the CAM list shows: the newest of the name, or the first ticked one. */
  const modelId = () => (chosen("selector") === "ids"
    ? form.querySelector('input[name="model_ids"]:checked')?.value
    : modelName.selectedOptions[0]?.dataset.modelId);

  const option = (value, text, disabled = false) => {
    const element = new Option(text, value, false, value === wanted);
    element.disabled = disabled;
    return element;
  };
  const show = (layers, note) => {
    cam.replaceChildren(option("auto", "auto"), option("none", "none (no CAM audit)"),
      ...layers.map((name) => option(name, `Grad-CAM on ${name}`)));
    if (note) cam.appendChild(option("", note, true));
    if (![...cam.options].some((item) => item.selected && !item.disabled)) cam.value = "auto";
  };

  const fillLayers = async () => {
    const id = modelId();
    if (!id) { show([], "choose a model to list its conv layers"); return; }
    if (!cache.has(id)) {
      show([], "loading the model's conv layers…");
      try {
        cache.set(id, camLayers(await Dash.getJSON(`/api/v1/models/${id}/architecture`)));
      } catch (error) {
        if (modelId() === id) show([], `conv layers unavailable: ${error.message}`);
        return;
      }
    }
    if (modelId() === id) show(cache.get(id), null);
  };

  form.querySelectorAll('input[name="selector"], input[name="schedule"]').forEach((radio) => {
    radio.addEventListener("change", () => { showRows(); fillLayers(); });
  });
  form.querySelectorAll('input[name="model_ids"]').forEach((box) => box.addEventListener("change", fillLayers));
  modelName.addEventListener("change", fillLayers);
  cam.addEventListener("change", () => { wanted = cam.value; });
  policy.addEventListener("change", () => { targetClass.hidden = policy.value !== "class"; });
  showRows();
  fillLayers();
});
