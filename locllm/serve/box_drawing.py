"""Person boxes drawn on the uploaded image of the web demo: the browser side.

Drag on the image (or click one corner, then the opposite one) and the box is appended to the person-box
field as ``x,y,w,h`` in image pixels; every box in that field, typed or drawn, is shown on the image. The
field stays the one source of the boxes, so typing numbers works as before and the server sees no
difference. Runs once when the page loads (``app.load(js=BOX_DRAWING_JS)``).
"""

BOX_DRAWING_JS = r"""
() => {
  const SVG = "http://www.w3.org/2000/svg";
  const field = () => document.querySelector("#boxes textarea");
  const picture = () => document.querySelector("#image .image-frame img");
  let start = null;    // image pixels where the pointer went down
  let corner = null;   // the first corner of a box made by two clicks
  let current = null;  // the box being dragged, image pixels [x, y, w, h]
  let drawn = "";

  // The img element is as large as its frame; the picture inside it is scaled down to fit and centred.
  function placement(img) {
    const rect = img.getBoundingClientRect();
    let scale = Math.min(rect.width / img.naturalWidth, rect.height / img.naturalHeight);
    if (getComputedStyle(img).objectFit === "scale-down") scale = Math.min(1, scale);
    return {left: rect.left + (rect.width - img.naturalWidth * scale) / 2,
            top: rect.top + (rect.height - img.naturalHeight * scale) / 2, scale: scale};
  }

  function toImage(img, event) {
    const p = placement(img);
    const clamp = (v, high) => Math.max(0, Math.min(high, Math.round(v)));
    return [clamp((event.clientX - p.left) / p.scale, img.naturalWidth),
            clamp((event.clientY - p.top) / p.scale, img.naturalHeight)];
  }

  function typedBoxes() {
    return (field()?.value || "").split("\n").map(line => line.split(",").map(Number))
      .filter(v => v.length === 4 && v.every(Number.isFinite));
  }

  function draw() {
    const img = picture();
    const text = field()?.value || "";
    const key = img ? [img.src, text, JSON.stringify(current), JSON.stringify(corner),
                       img.getBoundingClientRect().width].join("|") : "";
    if (key === drawn && document.querySelector("#box-overlay")) return;
    drawn = key;
    document.querySelector("#box-overlay")?.remove();
    if (!img || !img.naturalWidth) return;
    const p = placement(img), frame = img.parentElement.getBoundingClientRect();
    const svg = document.createElementNS(SVG, "svg");
    svg.id = "box-overlay";
    svg.setAttribute("viewBox", `0 0 ${img.naturalWidth} ${img.naturalHeight}`);
    Object.assign(svg.style, {position: "absolute", pointerEvents: "none", left: `${p.left - frame.left}px`,
                              top: `${p.top - frame.top}px`, width: `${img.naturalWidth * p.scale}px`,
                              height: `${img.naturalHeight * p.scale}px`});
    const typed = typedBoxes();
    const boxes = typed.concat(current ? [current] : []);
    if (corner) boxes.push([corner[0] - 1, corner[1] - 1, 2, 2]);
    boxes.forEach(([x, y, w, h], i) => {
      const rect = document.createElementNS(SVG, "rect");
      for (const [name, value] of Object.entries({x, y, width: w, height: h, fill: "none",
                                                   stroke: i < typed.length ? "#ffd400" : "#00e0ff",
                                                   "stroke-width": 2, "vector-effect": "non-scaling-stroke"}))
        rect.setAttribute(name, value);
      rect.setAttribute("class", "person-box");
      svg.appendChild(rect);
    });
    img.parentElement.style.position = "relative";
    img.parentElement.appendChild(svg);
  }

  function append(box) {
    const f = field();
    const line = box.join(",");
    f.value = f.value.trim() ? `${f.value.replace(/\s+$/, "")}\n${line}` : line;
    f.dispatchEvent(new Event("input", {bubbles: true}));  // so that gradio reads the new value
  }

  const between = (a, b) => [Math.min(a[0], b[0]), Math.min(a[1], b[1]), Math.abs(a[0] - b[0]), Math.abs(a[1] - b[1])];

  document.addEventListener("mousedown", event => {
    if (event.button !== 0 || event.target !== picture()) return;
    event.preventDefault();  // no native image drag
    start = toImage(event.target, event);
  });
  document.addEventListener("mousemove", event => {
    const img = picture();
    if (!start || !img) return;
    current = between(start, toImage(img, event));
    draw();
  });
  document.addEventListener("mouseup", event => {
    const img = picture();
    if (!start || !img) return;
    const end = toImage(img, event);
    const box = between(start, end);
    start = null;
    current = null;
    if (box[2] >= 3 && box[3] >= 3) {  // a drag
      corner = null;
      append(box);
    } else if (corner) {  // the second click
      const clicked = between(corner, end);
      corner = null;
      if (clicked[2] >= 1 && clicked[3] >= 1) append(clicked);
    } else {
      corner = end;
    }
    draw();
  });
  // Uploads, bundled examples and typing all change what to show; a light poll catches every one.
  setInterval(draw, 200);
}
"""
