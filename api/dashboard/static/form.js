"use strict";
// New-evaluation form: the CAM layer list follows the chosen model; class K shows for the class policy.

const MIN_CAM_PIXELS = 2; // a 1×1 map is constant, so the server refuses such a layer for Grad-CAM

/** Conv layers whose output is a spatial map of at least two pixels: the valid Grad-CAM targets. */
function camLayers(architecture) {
  return (architecture.layers || []).filter((layer) => {
    const shape = layer.output_shape || [];
    const spatial = layer.spatial_dims === undefined || layer.spatial_dims === 2;
    return spatial && shape.length === 3 && shape[1] * shape[2] >= MIN_CAM_PIXELS;
  }).map((layer) => layer.name);
}

/**
 * The CAM layer list of `form`, following the model `modelId()` names (undefined: none chosen), and the
 * class-K field shown for the class policy. Returns fill(), to call when the model changes, and
 * forgetChoice(), which goes back to "auto" for the next fill.
 */
function camLayerPicker(form, modelId) {
  const cam = form.querySelector("#cam");
  const policy = form.querySelector("#targeted");
  const targetClass = form.querySelector("#target_class");
  const cache = new Map();
  let wanted = cam.dataset.selected || "auto";

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

  const fill = async () => {
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

  cam.addEventListener("change", () => { wanted = cam.value; });
  policy.addEventListener("change", () => { targetClass.hidden = policy.value !== "class"; });
  return { fill, forgetChoice: () => { wanted = "auto"; } };
}

document.addEventListener("DOMContentLoaded", () => {
  const form = document.getElementById("evaluation-form");
  if (!form) return;
  const model = form.querySelector("#model_id");
  const picker = camLayerPicker(form, () => model.value);
  model.addEventListener("change", () => { picker.forgetChoice(); picker.fill(); });
  picker.fill();
});
