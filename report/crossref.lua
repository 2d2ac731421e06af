--[[
Quarto-style cross-references for plain pandoc (the offline engine).

Figures, tables and sections carry ids `fig-...` / `tbl-...` / `sec-...`; the
text cites them as `@fig-...` and so on, which pandoc parses as citations.

* Typst output: Typst numbers figures itself, so each citation becomes a raw
  Typst reference (`@fig-x` renders as "Figure 3").
* Every other output (HTML): figures and tables are numbered in document
  order, captions get a "Figure N:" / "Table N:" prefix, and citations become
  links reading "Figure N".

One numbering: Typst counts only what the PDF holds, so a figure only the HTML
shows (its image has class `detail`, inside `content-visible when-format="html"`)
takes no number of its own: it is "Figure 5a", "5b", ... after the numbered figure
before it, and Figure N is the same figure in both formats.

A citation of an id that no figure or table carries stops the render with an
error, so a broken reference can never reach a report.
]]

local names = { fig = "Figure", tbl = "Table", sec = "Section" }

local function kind_of(id)
  local kind = id:match("^(%a+)%-")
  if names[kind] then
    return kind
  end
  return nil
end

local function is_detail(el)
  if el.t ~= "Figure" then
    return false
  end
  local found = false
  el:walk({
    Image = function(img)
      if img.classes:includes("detail") then
        found = true
      end
    end,
  })
  return found
end

function Pandoc(doc)
  local labels, counts, details = {}, { fig = 0, tbl = 0 }, 0
  local function register(el)
    local id = el.identifier
    local kind = id and id ~= "" and kind_of(id)
    if kind and is_detail(el) then
      details = details + 1
      labels[id] = { kind = kind, number = counts[kind] .. string.char(96 + math.min(details, 26)) }
    elseif kind then
      counts[kind] = counts[kind] + 1
      details = 0
      labels[id] = { kind = kind, number = counts[kind] }
    end
  end
  doc:walk({ Figure = register, Table = register })
  -- Sections are numbered like pandoc's --number-sections: 1, 1.1, 2, ...
  local levels = {}
  for _, block in ipairs(doc.blocks) do
    if block.t == "Header" and not block.classes:includes("unnumbered") then
      levels[block.level] = (levels[block.level] or 0) + 1
      for deeper = block.level + 1, 9 do
        levels[deeper] = nil
      end
      if kind_of(block.identifier) == "sec" then
        local parts = {}
        for level = 1, block.level do
          table.insert(parts, tostring(levels[level] or 0))
        end
        labels[block.identifier] = { kind = "sec", number = table.concat(parts, ".") }
      end
    end
  end

  local typst = FORMAT:match("typst") ~= nil

  local function prefix_caption(el)
    local label = labels[el.identifier]
    if typst or not label or label.kind == "sec" then
      return nil
    end
    local text = names[label.kind] .. " " .. label.number .. ": "
    local long = el.caption.long
    if #long > 0 and (long[1].t == "Plain" or long[1].t == "Para") then
      long[1].content:insert(1, pandoc.Strong({ pandoc.Str(text) }))
    else
      long:insert(1, pandoc.Plain({ pandoc.Strong({ pandoc.Str(text) }) }))
    end
    el.caption.long = long
    return el
  end

  local function resolve(cite)
    local out = pandoc.List()
    for i, c in ipairs(cite.citations) do
      local id = c.id
      local label = labels[id]
      if not kind_of(id) then
        return nil -- not a cross-reference: leave ordinary citations alone
      end
      if not label then
        error("unresolved cross-reference @" .. id .. " (no figure or table has this id)")
      end
      if i > 1 then
        out:insert(pandoc.Str(", "))
      end
      if typst then
        out:insert(pandoc.RawInline("typst", "@" .. id))
      else
        out:insert(pandoc.Link({ pandoc.Str(names[label.kind] .. "\u{A0}" .. label.number) }, "#" .. id))
      end
    end
    return out
  end

  -- The data-source banner: a coloured box in the PDF too (HTML styles it with CSS).
  local function banner(div)
    if not (typst and div.classes:includes("data-banner")) then
      return nil
    end
    local fill = div.classes:includes("synthetic") and "rgb(\"#fff3cd\")" or "rgb(\"#e8f4ea\")"
    local stroke = div.classes:includes("synthetic") and "1.5pt + rgb(\"#d39e00\")" or "0.8pt + rgb(\"#5a9e64\")"
    local out = pandoc.List({ pandoc.RawBlock("typst", "#block(fill: " .. fill .. ", stroke: " .. stroke .. ", inset: 8pt, radius: 3pt, width: 100%)[") })
    out:extend(div.content)
    out:insert(pandoc.RawBlock("typst", "]"))
    return out
  end

  return doc:walk({ Figure = prefix_caption, Table = prefix_caption, Cite = resolve, Div = banner })
end
