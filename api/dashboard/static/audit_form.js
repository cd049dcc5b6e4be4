"use strict";
// New-audit form: show the fields of the chosen model selector and schedule kind, and list the CAM layers of
// the model the selector names now (camLayerPicker comes from form.js, loaded before this file).

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("audit-form");
  if (!form) return;
  const rows = [...form.querySelectorAll(".field-row[data-when]")];
  const modelName = form.querySelector("#model_name");

  const chosen = (name) => form.querySelector(`input[name="${name}"]:checked`)?.value;
  const showRows = () => rows.forEach((row) => {
    const [name, value] = row.dataset.when.split("=");
    row.hidden = chosen(name) !== value;
  });

  /** The id of the model whose layers the CAM list shows: the newest of the name, or the first ticked one. */
  const modelId = () => (chosen("selector") === "ids"
    ? form.querySelector('input[name="model_ids"]:checked')?.value
    : modelName.selectedOptions[0]?.dataset.modelId);

  const fillLayers = camLayerPicker(form, modelId).fill;

  form.querySelectorAll('input[name="selector"], input[name="schedule"]').forEach((radio) => {
    radio.addEventListener("change", () => { showRows(); fillLayers(); });
  });
  form.querySelectorAll('input[name="model_ids"]').forEach((box) => box.addEventListener("change", fillLayers));
  modelName.addEventListener("change", fillLayers);
  showRows();
  fillLayers();
});
