"""codebay: rich results support of the Python driver, loaded by driver.py (by its path:
it is not on sys.path) when first needed, so that a session that never draws pays
nothing for it, not even the memory of compiling it.

- matplotlib: ``find_spec`` serves the driver's import hook (``driver._ImportHook``)
  for ``matplotlib.pyplot`` (``plt.show()`` and ``Figure.show()`` then display the
  figures, see ``patch_pyplot``) and ``matplotlib.font_manager`` (it builds the font
  cache, once a session: quietly, see ``_exec_font_manager``).
- ``figure_bundle(fig)``: the MIME types of a figure beside its text/plain:
  ``image/png`` (the whole figure as savefig draws it: its size x its dpi unless the
  user's rcParams say otherwise) and ``e2b/chart``, the chart's data in E2B's shape
  (see ``chart``); the figure counts as shown by the run.
- ``show_open_figures(skip_shown)``: displays pyplot's open figures, then closes them all.
- ``chart(fig)``: what a line, scatter, bar or pie chart shows, as data: a dict with
  ``type`` (``line``, ``scatter``, ``bar``, ``pie``, ``superchart`` for a figure of
  several axes, ``unknown``), ``title`` and ``elements``, plus ``x_label``,
  ``x_unit``, ``y_label``, ``y_unit`` for line, scatter and bar charts and the ticks
  and scales (``x_ticks``, ``x_tick_labels``, ``x_scale``, ``y_...``) of line and
  scatter charts. Elements: ``{label, points: [[x, y], ...]}`` (line, scatter),
  ``{label, group, value}`` (bar; for horizontal bars x is the category axis, as in
  E2B), ``{label, angle, radius}`` (pie; angle in degrees), charts (superchart).
  Non-finite values (NaN, inf) are left out, so the JSON is strict. None when the
  figure shows no data.
- ``series_html(series)``: a pandas Series as a one-column table.

Only the standard library is imported here: this module is loaded while matplotlib
is being imported, and imports its parts (and numpy) when a figure is first drawn.
"""

import base64
import io
import math
import os
import re
import sys

CHART_MIME = 'e2b/chart'

# Set by the driver (setup): its import hook, display(), its _State and a way to say
# something on stderr.
_hook = _display = _state = _note = None

_isfinite = math.isfinite
# "Temperature (°C)", "time [s]": the unit is the last bracketed part of a label.
_UNIT = re.compile(r'[(\[]\s*([^()\[\]]+?)\s*[)\]]\s*$')
_SCALES = ('linear', 'log', 'symlog', 'logit', 'function', 'functionlog', 'asinh')
np = _category = _dates = PathCollection = BarContainer = ErrorbarContainer = Rectangle = Wedge = None
_DATE_CONVERTERS = ()


def setup(hook, display, state, note):
    global _hook, _display, _state, _note
    _hook, _display, _state, _note = hook, display, state, note


def _load():
    """numpy and the parts of matplotlib the chart code reads, on first use."""
    global np, _category, _dates, PathCollection, BarContainer, ErrorbarContainer, Rectangle, Wedge
    global _DATE_CONVERTERS
    if np is not None:
        return
    import numpy
    from matplotlib import category, dates
    from matplotlib.collections import PathCollection as path_collection
    from matplotlib.container import BarContainer as bar_container, ErrorbarContainer as errorbar_container
    from matplotlib.patches import Rectangle as rectangle, Wedge as wedge
    _category, _dates = category, dates
    PathCollection, BarContainer, ErrorbarContainer = path_collection, bar_container, errorbar_container
    Rectangle, Wedge = rectangle, wedge
    _DATE_CONVERTERS = tuple(c for c in (getattr(dates, n, None) for n in (
        'DateConverter', 'ConciseDateConverter', '_SwitchableDateConverter')) if isinstance(c, type))
    np = numpy


# ------------------------------------------------------------------ the import hook

def find_spec(name, path, target):
    """The spec the finders after the driver's hook give, its loader wrapped."""
    for finder in sys.meta_path:
        find = getattr(finder, 'find_spec', None)
        if finder is _hook or find is None:
            continue
        spec = find(name, path, target)
        if spec is not None:
            break
    else:
        return None
    if spec.loader is not None and callable(getattr(spec.loader, 'exec_module', None)):
        spec.loader = _HookedLoader(spec.loader)
    return spec


class _HookedLoader:
    def __init__(self, loader):
        self._loader = loader

    def __getattr__(self, name):
        return getattr(self._loader, name)

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module):
        if module.__name__ == 'matplotlib.font_manager':
            _exec_font_manager(self._loader, module)
            return
        self._loader.exec_module(module)
        try:
            patch_pyplot(module)
        except Exception:
            pass  # pyplot as it is: its figures still come at the end of the run


def _exec_font_manager(loader, module):
    """matplotlib.font_manager builds the font cache: fc-list, which it asks for the
    system's fonts, is given an empty configuration when the sandbox has none (it
    would say so on stderr), and 'Matplotlib is building the font cache; this may take
    a moment.' (logged when the build takes over 5 s, as in a busy sandbox) is not said."""
    import logging
    conf = _empty_fontconfig()
    if conf is not None:
        os.environ['FONTCONFIG_FILE'] = conf
    log = logging.getLogger('matplotlib.font_manager')
    log.addFilter(_quiet_font_cache)
    try:
        loader.exec_module(module)
    finally:
        log.removeFilter(_quiet_font_cache)
        if conf is not None and os.environ.get('FONTCONFIG_FILE') == conf:
            del os.environ['FONTCONFIG_FILE']


def _quiet_font_cache(record):
    try:
        return 'building the font cache' not in str(record.msg)
    except Exception:
        return True


def _empty_fontconfig():
    """An empty fontconfig file in matplotlib's cache directory when the sandbox has no
    configuration and the user set none; else None."""
    env = os.environ
    if os.path.exists('/etc/fonts/fonts.conf') or 'FONTCONFIG_FILE' in env or 'FONTCONFIG_PATH' in env:
        return None
    try:
        path = os.path.join(sys.modules['matplotlib'].get_cachedir(), 'codebay-fonts.conf')
        if not os.path.exists(path):
            with open(path, 'w') as f:
                f.write('<?xml version="1.0"?>\n<fontconfig></fontconfig>\n')
        return path
    except Exception:
        return None


def patch_pyplot(plt):
    """plt.show() shows every open figure, fig.show() that figure: as results of the run."""
    from matplotlib.figure import Figure

    def pyplot_show(*args, **kwargs):
        """Shows every open figure as an image/png result of the run, then closes them
        (codebay: the sandbox has no display)."""
        show_open_figures(False)

    def figure_show(self, warn=True):
        """Shows this figure as an image/png result of the run, then closes it (codebay)."""
        _display(self)
        plt.close(self)

    pyplot_show.__wrapped__ = plt.show
    plt.show = pyplot_show
    Figure.show = figure_show


# ------------------------------------------------------------------ figures as results

def figure_bundle(fig):
    """{'image/png': ..., 'e2b/chart': ...} of a figure ({} when it cannot be drawn, and
    a line on stderr says why); the figure counts as shown by the run."""
    if _state.in_run:
        _state.figures.append(fig)
    try:
        return bundle(fig)
    except Exception as e:
        _note('[codebay] the figure could not be drawn: %s: %s\n' % (type(e).__name__, e))
        return {}


def show_open_figures(skip_shown):
    """Displays pyplot's open figures by number (skip_shown: not those the run has shown
    already), then closes them all."""
    helpers = sys.modules.get('matplotlib._pylab_helpers')
    if helpers is None or not helpers.Gcf.figs:
        return
    try:
        for manager in sorted(helpers.Gcf.get_all_fig_managers(), key=lambda m: m.num):
            fig = manager.canvas.figure
            if skip_shown and any(f is fig for f in _state.figures):
                continue
            _display(fig)
    finally:
        close_figures()


def after_error(interrupted):
    """The figures of a run that raised are its results too (drawn while a SIGINT can
    still stop the drawing); a run that was stopped (its time is up) only closes them."""
    import signal
    sigint = {signal.SIGINT}
    try:
        if interrupted:
            close_figures()
            return
        _state.running = True
        signal.pthread_sigmask(signal.SIG_UNBLOCK, sigint)
        show_open_figures(True)
    except BaseException:
        pass
    finally:
        signal.pthread_sigmask(signal.SIG_BLOCK, sigint)
        _state.running = False


def close_figures():
    helpers = sys.modules.get('matplotlib._pylab_helpers')
    if helpers is not None:
        helpers.Gcf.destroy_all()


def series_html(series):
    """A Series as the table Jupyter shows for a DataFrame (pandas gives a Series text only)."""
    try:
        name = series.name
        return series.to_frame(name=name if name is not None else '')._repr_html_()
    except Exception:
        return None


# ------------------------------------------------------------------ chart data

def bundle(fig):
    """{'image/png': base64, 'e2b/chart': {...}} for a figure (the chart when it has one)."""
    _load()
    buf = io.BytesIO()
    fig.savefig(buf, format='png')
    out = {'image/png': base64.b64encode(buf.getvalue()).decode('ascii')}
    try:
        data = chart(fig)
    except Exception:
        data = None  # a figure this code does not understand still has its picture
    if data is not None:
        out[CHART_MIME] = data
    return out


def chart(fig):
    _load()
    axes = [ax for ax in fig.get_axes() if not hasattr(ax, '_colorbar') and ax.has_data()]
    if not axes:
        return None
    suptitle = _suptitle(fig)
    if len(axes) == 1:
        c = _axes_chart(axes[0])
        if c['title'] is None:
            c['title'] = suptitle
        return c
    return {'type': 'superchart', 'title': suptitle, 'elements': [_axes_chart(ax) for ax in axes]}


def _suptitle(fig):
    t = getattr(fig, '_suptitle', None)
    text = t.get_text() if t is not None else ''
    return text or None


def _title(ax):
    for loc in ('center', 'left', 'right'):
        t = ax.get_title(loc)
        if t:
            return t
    return None


def _error_bars(ax):
    """The artists of the axes' error bars (ax.errorbar, bar(yerr=...)) but their data
    lines: decoration."""
    out = []
    for cont in ax.containers:
        if isinstance(cont, ErrorbarContainer):
            _, caplines, barlinecols = cont.lines
            out.extend(caplines)
            out.extend(barlinecols)
    return out


def _data_lines(ax, skip=()):
    # axhline/axvline and lines drawn in axes coordinates are decoration, not data.
    return [line for line in ax.lines
            if line.get_transform() is ax.transData and line.get_visible() and not any(line is a for a in skip)]


def _is_segment(line):
    """A two-point vertical or horizontal line: how seaborn draws a bar's error bar."""
    xy = line.get_xydata()
    return len(xy) == 2 and (xy[0][0] == xy[1][0] or xy[0][1] == xy[1][1])


def _kind(ax):
    if ax.images or ax.tables or ax.artists:
        return 'unknown'
    errors = _error_bars(ax)
    lines = _data_lines(ax, errors)
    collections = [c for c in ax.collections if c.get_visible() and not any(c is a for a in errors)]
    patches = [p for p in ax.patches if p.get_visible()]
    if lines and not collections and not patches:
        return 'line'
    if collections and not lines and not patches and all(type(c) is PathCollection for c in collections):
        return 'scatter'
    if patches and not collections:
        if not lines and not errors and all(isinstance(p, Wedge) for p in patches):
            return 'pie'
        if all(type(p) is Rectangle for p in patches) and _bar_containers(ax) and all(_is_segment(l) for l in lines):
            return 'bar'
    return 'unknown'


def _bar_containers(ax):
    return [c for c in ax.containers if isinstance(c, BarContainer)]


def _axes_chart(ax):
    kind = _kind(ax)
    c = {'type': kind, 'title': _title(ax)}
    if kind in ('line', 'scatter', 'bar'):
        x_label, y_label = ax.get_xlabel() or None, ax.get_ylabel() or None
        if kind == 'bar' and _horizontal(ax):
            x_label, y_label = y_label, x_label  # x is the category axis
        c['x_label'] = x_label
        c['x_unit'] = _unit(x_label)
        c['y_label'] = y_label
        c['y_unit'] = _unit(y_label)
    if kind in ('line', 'scatter'):
        for name, axis in (('x', ax.xaxis), ('y', ax.yaxis)):
            ticks, labels, scale = _ticks(axis)
            c[name + '_ticks'] = ticks
            c[name + '_tick_labels'] = labels
            c[name + '_scale'] = scale
    if kind == 'line':
        c['elements'] = _line_elements(ax)
    elif kind == 'scatter':
        c['elements'] = _scatter_elements(ax)
    elif kind == 'bar':
        c['elements'] = _bar_elements(ax)
    elif kind == 'pie':
        c['elements'] = _pie_elements(ax)
    else:
        c['elements'] = []
    return c


def _unit(label):
    if not label:
        return None
    m = _UNIT.search(label)
    return m.group(1) if m else None


def _converter(axis):
    get = getattr(axis, 'get_converter', None)
    return get() if get is not None else getattr(axis, 'converter', None)


def _scale(axis):
    conv = _converter(axis)
    if _DATE_CONVERTERS and isinstance(conv, _DATE_CONVERTERS):
        return 'datetime'
    if isinstance(conv, _category.StrCategoryConverter):
        return 'categorical'
    scale = axis.get_scale()
    return scale if scale in _SCALES else 'unknown'


def _ticks(axis):
    scale = _scale(axis)
    locs = np.asarray(axis.get_ticklocs(), dtype=float)
    labels = [t.get_text() for t in axis.get_ticklabels()]
    if scale == 'datetime':
        ticks = [_date_text(v) for v in locs.tolist()]
    else:
        ticks = [float('%.12g' % v) for v in locs.tolist()]  # 0.4, not 0.4000000000000001
    keep = [i for i, t in enumerate(ticks) if t is not None and (not isinstance(t, float) or _isfinite(t))]
    return [ticks[i] for i in keep], [labels[i] if i < len(labels) else '' for i in keep], scale


def _date_text(num):
    try:
        return _dates.num2date(num).replace(tzinfo=None).isoformat()
    except Exception:
        return None


def _label(artist, default):
    label = artist.get_label()
    if not isinstance(label, str) or not label or label.startswith('_'):
        return default
    return label


def _values(data):
    """A sequence of coordinates as JSON values: numbers as floats, dates as ISO text,
    anything else as text; a non-finite or missing value is None."""
    mask = np.ma.getmaskarray(data) if np.ma.isMaskedArray(data) else None
    try:
        arr = np.asarray(np.ma.getdata(data))
    except Exception:
        arr = np.asarray(list(data), dtype=object)
    if arr.ndim != 1:
        arr = arr.reshape(-1)
    kind = arr.dtype.kind
    if kind in 'biuf':
        out = arr.astype(float).tolist()
        if not np.isfinite(arr).all():
            out = [v if _isfinite(v) else None for v in out]
    elif kind == 'M':
        out = [None if s == 'NaT' else s for s in np.datetime_as_string(arr.astype('datetime64[s]')).tolist()]
    else:
        out = [_value(v) for v in arr.tolist()]
    if mask is not None and mask.any():
        out = [None if m else v for v, m in zip(out, mask.tolist())]
    return out


def _value(v):
    if v is None or isinstance(v, bool):
        return None if v is None else float(v)
    if isinstance(v, (int, float, np.number)):
        f = float(v)
        return f if _isfinite(f) else None
    if isinstance(v, str):
        return v
    iso = getattr(v, 'isoformat', None)  # datetime, date, pandas Timestamp
    if callable(iso):
        try:
            if v != v:  # NaT
                return None
            return iso()
        except Exception:
            pass
    if isinstance(v, np.datetime64):
        return None if np.isnat(v) else str(v.astype('datetime64[s]'))
    return str(v)


def _points(xs, ys):
    return [[x, y] for x, y in zip(xs, ys) if x is not None and y is not None]


def _line_elements(ax):
    out = []
    # ax.errorbar(label=...) labels its container, not its data line.
    named = [(c.lines[0], c) for c in ax.containers if isinstance(c, ErrorbarContainer) and c.lines[0] is not None]
    for line in _data_lines(ax, _error_bars(ax)):
        xs = _values(line.get_xdata())
        ys = _values(line.get_ydata())
        label = _label(line, None)
        if label is None:
            label = next((_label(c, None) for l, c in named if l is line), None) or 'Line %d' % (len(out) + 1)
        out.append({'label': label, 'points': _points(xs, ys)})
    return out


def _decoder(axis):
    """Turns plotted numbers back into what the axis shows: dates, categories."""
    scale = _scale(axis)
    if scale == 'datetime':
        return lambda vs: [None if v is None else _date_text(v) for v in vs]
    if scale == 'categorical':
        units = axis.get_units()
        mapping = getattr(units, '_mapping', None) or {}
        names = {float(i): str(k) for k, i in mapping.items()}
        return lambda vs: [None if v is None else names.get(v, v) for v in vs]
    return None


def _scatter_elements(ax):
    out = []
    dx, dy = _decoder(ax.xaxis), _decoder(ax.yaxis)
    for coll in ax.collections:
        if not coll.get_visible():
            continue
        offsets = coll.get_offsets()
        if np.ma.isMaskedArray(offsets):
            mask = np.ma.getmaskarray(offsets).any(axis=-1) if offsets.ndim == 2 else None
            data = np.ma.getdata(offsets)
        else:
            mask, data = None, np.asarray(offsets)
        data = np.asarray(data, dtype=float).reshape(-1, 2) if np.size(data) else np.zeros((0, 2))
        xs = _values(data[:, 0])
        ys = _values(data[:, 1])
        if mask is not None and mask.size == len(xs):
            xs = [None if m else v for v, m in zip(xs, mask.tolist())]
        if dx is not None:
            xs = dx(xs)
        if dy is not None:
            ys = dy(ys)
        out.append({'label': _label(coll, 'Series %d' % (len(out) + 1)), 'points': _points(xs, ys)})
    return out


def _horizontal(ax):
    for cont in _bar_containers(ax):
        orientation = getattr(cont, 'orientation', None)
        if orientation is not None:
            return orientation == 'horizontal'
        rects = list(cont)
        if len(rects) > 1:
            heights = {r.get_height() for r in rects}
            widths = {r.get_width() for r in rects}
            return len(heights) == 1 and len(widths) > 1
    return False


def _axis_label_at(axis, pos, names):
    """The category or tick label the axis shows at pos, else the number itself."""
    if names is not None:
        name = names.get(float(pos))
        if name is not None:
            return name
    locs = axis.get_ticklocs()
    for loc, text in zip(locs, axis.get_ticklabels()):
        if abs(loc - pos) <= 1e-9 * max(1.0, abs(pos)):
            t = text.get_text()
            if t:
                return t
    if _scale(axis) == 'datetime':
        return _date_text(pos) or '%g' % pos
    return '%g' % pos


def _bar_elements(ax):
    out = []
    horizontal = _horizontal(ax)
    axis = ax.yaxis if horizontal else ax.xaxis
    names = None
    if _scale(axis) == 'categorical':
        mapping = getattr(axis.get_units(), '_mapping', None) or {}
        names = {float(i): str(k) for k, i in mapping.items()}
    for n, cont in enumerate(_bar_containers(ax)):
        group = _label(cont, 'Group %d' % (n + 1))
        rects = list(cont)
        values = getattr(cont, 'datavalues', None)
        if values is None or len(values) != len(rects):
            values = [r.get_width() if horizontal else r.get_height() for r in rects]
        for rect, value in zip(rects, _values(values)):
            if value is None or not isinstance(value, float):
                continue
            if horizontal:
                pos = rect.get_y() + rect.get_height() / 2
            else:
                pos = rect.get_x() + rect.get_width() / 2
            out.append({'label': _axis_label_at(axis, pos, names), 'group': group, 'value': value})
    return out


def _pie_elements(ax):
    out = []
    for wedge in ax.patches:
        if not isinstance(wedge, Wedge):
            continue
        angle = abs(float(wedge.theta2) - float(wedge.theta1))
        out.append({'label': _label(wedge, 'Slice %d' % (len(out) + 1)),
                    'angle': round(angle, 4), 'radius': float(wedge.r)})
    return out

