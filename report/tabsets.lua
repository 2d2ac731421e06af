--[[
Quarto-style tabsets for plain pandoc (the offline engine), HTML output only.

A Div with class `panel-tabset` holding headings of one level becomes a row of
tab buttons and one panel per heading; report.js switches them. The headings
stay inside their panels (so their ids, the table of contents and
cross-references keep working; report.js opens the panel a link points into).
Every other output (Typst/PDF) keeps the Div as it is: consecutive subsections.
]]

local function tabset(div)
  local level
  for _, block in ipairs(div.content) do
    if block.t == "Header" then
      level = level and math.min(level, block.level) or block.level
    end
  end
  if not level then
    return nil
  end
  local titles, panels, current = {}, {}, nil
  for _, block in ipairs(div.content) do
    if block.t == "Header" and block.level == level then
      current = pandoc.List({ block })
      table.insert(panels, current)
      table.insert(titles, pandoc.utils.stringify(block.content))
    elseif current then
      current:insert(block)
    end
  end
  local buttons = {}
  for i, title in ipairs(titles) do
    local selected = i == 1 and "true" or "false"
    table.insert(
      buttons,
      string.format(
        '<button type="button" role="tab" class="tab-button" data-tab="%d" aria-selected="%s">%s</button>',
        i - 1,
        selected,
        (title:gsub("&", "&amp;"):gsub("<", "&lt;"))
      )
    )
  end
  local out = pandoc.List({
    pandoc.RawBlock("html", '<div class="tabset" data-tabset>'),
    pandoc.RawBlock("html", '<div class="tab-buttons" role="tablist">' .. table.concat(buttons) .. "</div>"),
  })
  for i, blocks in ipairs(panels) do
    local hidden = i == 1 and "" or " hidden"
    out:insert(pandoc.RawBlock("html", string.format('<div class="tab-panel" role="tabpanel" data-tab="%d"%s>', i - 1, hidden)))
    out:extend(blocks)
    out:insert(pandoc.RawBlock("html", "</div>"))
  end
  out:insert(pandoc.RawBlock("html", "</div>"))
  return out
end

-- Quarto's conditional content for plain pandoc: a Div of class `content-visible` with
-- `when-format="html"` (or `unless-format="html"`) is kept only in that output.
local function conditional(div)
  local is_html = FORMAT:match("html") ~= nil
  local when, unless = div.attributes["when-format"], div.attributes["unless-format"]
  if when and (when == "html") ~= is_html then
    return {}
  end
  if unless and (unless == "html") == is_html then
    return {}
  end
  return div.content
end

function Div(div)
  if div.classes:includes("content-visible") then
    return conditional(div)
  end
  if FORMAT:match("html") and div.classes:includes("panel-tabset") then
    return tabset(div)
  end
  return nil
end
