// Time-series charts on uPlot (vendor/, MIT): one canvas, fast for 50 series × 1,440 points. Bands (the
// characterize windows) and markers (the onset) are painted on the same canvas, under and over the lines.

import uPlot from './vendor/uPlot.esm.js';

const PALETTE = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f',
                 '#bcbd22', '#17becf', '#393b79', '#ad494a', '#637939', '#8c6d31', '#843c39', '#7b4173',
                 '#3182bd', '#e6550d', '#31a354', '#756bb1'];

export const colorOf = (i) => PALETTE[i % PALETTE.length];

function widthOf(container) {
  return Math.max(320, Math.floor(container.getBoundingClientRect().width) || 800);
}

function paintBands(u, bands) {
  const ctx = u.ctx;
  const {top, height} = u.bbox;
  for (const band of bands) {
    const x0 = Math.max(u.bbox.left, u.valToPos(band.from, 'x', true));
    const x1 = Math.min(u.bbox.left + u.bbox.width, u.valToPos(band.to, 'x', true));
    if (x1 <= x0) continue;
    ctx.fillStyle = band.fill;
    ctx.fillRect(x0, top, x1 - x0, height);
  }
}

function paintMarkers(u, markers) {
  const ctx = u.ctx;
  const {top, height} = u.bbox;
  ctx.save();
  for (const marker of markers) {
    const x = Math.round(u.valToPos(marker.at, 'x', true));
    ctx.strokeStyle = marker.stroke;
    ctx.lineWidth = 2 * devicePixelRatio;
    ctx.setLineDash([6 * devicePixelRatio, 4 * devicePixelRatio]);
    ctx.beginPath();
    ctx.moveTo(x, top);
    ctx.lineTo(x, top + height);
    ctx.stroke();
    if (marker.label) {
      ctx.setLineDash([]);
      ctx.fillStyle = marker.stroke;
      ctx.font = `${12 * devicePixelRatio}px sans-serif`;
      ctx.fillText(marker.label, x + 4 * devicePixelRatio, top + 14 * devicePixelRatio);
    }
  }
  ctx.restore();
}

/**
 * A line chart. `times` in epoch seconds; `series` = [{label, values}] (null = gap).
 * `xRange` = [fromSec, toSec] fixes the x axis to a window. `onSelect(fromSec, toSec)` is called when the user drags across the plot (the view does not zoom).
 */
export function lineChart(container, {times, series, height = 320, onSelect, bands = [], markers = [], yLabel = '', xRange}) {
  const opts = {
    width: widthOf(container),
    height,
    cursor: {drag: {x: true, y: false, setScale: !onSelect}},
    // The x axis spans the window asked for (xRange, epoch seconds), so one bucket is not stretched to fill it.
    scales: {x: xRange ? {time: true, range: () => xRange} : {time: true}},
    legend: {live: series.length <= 60},
    axes: [{}, {label: yLabel, size: 70}],
    series: [{}, ...series.map((s, i) => ({label: s.label, stroke: colorOf(i), width: 1.5, spanGaps: false,
                                           points: {show: times.length <= 120}}))],
    hooks: {
      drawClear: [(u) => paintBands(u, bands)],
      draw: [(u) => paintMarkers(u, markers)],
      setSelect: onSelect ? [(u) => {
        if (u.select.width < 3) return;
        onSelect(u.posToVal(u.select.left, 'x'), u.posToVal(u.select.left + u.select.width, 'x'));
      }] : [],
    },
  };
  const data = [Float64Array.from(times), ...series.map((s) => s.values)];
  return new uPlot(opts, data, container);
}

/** Bars of span counts per bucket, with the slowest listed span of each bucket as a dot on a ms axis. */
export function sparklineChart(container, {times, counts, slowestMs, height = 120}) {
  const opts = {
    width: widthOf(container),
    height,
    legend: {show: true},
    cursor: {drag: {x: false, y: false}},
    scales: {x: {time: true}, count: {range: (u, min, max) => [0, Math.max(1, max)]},
             ms: {range: (u, min, max) => [0, Math.max(1, max || 1) * 1.1]}},
    axes: [{}, {scale: 'count', size: 50}, {scale: 'ms', side: 1, size: 60, grid: {show: false},
                                             values: (u, ticks) => ticks.map((t) => `${t} ms`)}],
    series: [{},
             {label: 'spans', scale: 'count', fill: 'rgba(31,119,180,0.35)', stroke: '#1f77b4',
              paths: uPlot.paths.bars({size: [0.85, 40]}), points: {show: false}},
             {label: 'slowest listed (ms)', scale: 'ms', stroke: '#d62728', paths: () => null,
              points: {show: true, size: 6, fill: '#d62728'}}],
  };
  return new uPlot(opts, [Float64Array.from(times), counts, slowestMs], container);
}
