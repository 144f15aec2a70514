package rdssim

import (
	"slices"
	"strings"
)

// menus maps each simulated menu path to its commands. Anything else is a
// "bad command name", as on RouterOS.
var menus = map[string][]string{
	"disk":            {"add", "set", "print", "remove", "monitor-traffic"},
	"file":            {"print", "remove"},
	"system identity": {"print"},
}

// submenus lists the words that lead to a deeper menu.
var submenus = map[string][]string{
	"":       {"disk", "file", "system"},
	"system": {"identity"},
}

// itemKind tells what one argument of a command is.
type itemKind int

const (
	itemWord  itemKind = iota // a loose word: detail, where, once, a slot
	itemValue                 // a loose quoted string
	itemPair                  // name=value or name~value
	itemFind                  // [find ...]
)

// cond is one prop=value or prop~regex condition of a where or find.
type cond struct {
	prop  string
	regex bool
	value string
	col   int
}

type item struct {
	kind  itemKind
	name  string // the word, or the pair's name
	regex bool   // the pair used ~
	value string // the pair's value, or the loose string
	// find is set for itemFind, and for a pair whose value is [find ...]
	// (copy-from=[find slot=x]).
	find []cond
	col  int
}

type command struct {
	menu  string // "disk", "file", "system identity"
	verb  string
	items []item
	end   int // column just past the last byte, for end-of-command errors
}

// parse turns one command line into a command, strictly: every construct the
// simulator does not understand is an error, never ignored.
func parse(line string) (*command, *cmdError) {
	toks, err := lex(line)
	if err != nil {
		return nil, err
	}
	p := &parser{toks: toks}
	cmd, err := p.menuAndVerb()
	if err != nil {
		return nil, err
	}
	for p.peek().kind != tokEOF {
		it, err := p.item()
		if err != nil {
			return nil, err
		}
		cmd.items = append(cmd.items, it)
	}
	cmd.end = p.peek().col
	return cmd, nil
}

type parser struct {
	toks []token
	pos  int
}

func (p *parser) peek() token { return p.toks[p.pos] }

func (p *parser) next() token {
	t := p.toks[p.pos]
	if t.kind != tokEOF {
		p.pos++
	}
	return t
}

// menuAndVerb reads "/disk add", "/system identity print" and so on. The
// menu path must be absolute: an exec command starts at the root menu, and a
// relative one is refused to keep the accepted language small.
func (p *parser) menuAndVerb() (*command, *cmdError) {
	first := p.next()
	if first.kind == tokEOF {
		return nil, failf(ErrTextNotSimulated, "empty command")
	}
	if first.kind != tokWord || !strings.HasPrefix(first.text, "/") {
		return nil, failf(ErrTextBadCommandName, first.text, first.col)
	}
	word, col := first.text[1:], first.col+1
	if strings.Contains(word, "/") {
		return nil, failf(ErrTextBadCommandName, word, col)
	}
	path := ""
	for {
		if verbs, ok := menus[path]; ok && path != "" {
			if slices.Contains(verbs, word) {
				return &command{menu: path, verb: word}, nil
			}
		}
		if !slices.Contains(submenus[path], word) {
			if word == "" {
				return nil, failf(ErrTextNotSimulated, "a menu without a command")
			}
			return nil, failf(ErrTextBadCommandName, word, col)
		}
		path = strings.TrimPrefix(path+" "+word, " ")
		t := p.next()
		if t.kind == tokEOF {
			return nil, failf(ErrTextNotSimulated, "a menu without a command")
		}
		if t.kind != tokWord {
			return nil, failf(ErrTextSyntax, t.col)
		}
		word, col = t.text, t.col
	}
}

func (p *parser) item() (item, *cmdError) {
	t := p.next()
	switch t.kind {
	case tokLBrack:
		conds, err := p.find(t)
		if err != nil {
			return item{}, err
		}
		return item{kind: itemFind, find: conds, col: t.col}, nil
	case tokString:
		return item{kind: itemValue, value: t.text, col: t.col}, nil
	case tokWord:
		op := p.peek()
		if (op.kind != tokEq && op.kind != tokTilde) || !op.glued {
			return item{kind: itemWord, name: t.text, col: t.col}, nil
		}
		p.next()
		it := item{kind: itemPair, name: t.text, regex: op.kind == tokTilde, col: t.col}
		v := p.peek()
		if !v.glued {
			// "name= next": an empty value, as RouterOS reads it.
			return it, nil
		}
		switch v.kind {
		case tokWord, tokString:
			p.next()
			it.value = v.text
		case tokLBrack:
			p.next()
			conds, err := p.find(v)
			if err != nil {
				return item{}, err
			}
			it.find = conds
		case tokEOF:
		default:
			return item{}, failf(ErrTextSyntax, v.col)
		}
		return it, nil
	default:
		return item{}, failf(ErrTextSyntax, t.col)
	}
}

// find reads "find [where] cond... ]" after an opening bracket. Only find is
// simulated inside brackets; RouterOS would run any command there.
func (p *parser) find(open token) ([]cond, *cmdError) {
	verb := p.next()
	if verb.kind != tokWord {
		return nil, failf(ErrTextSyntax, verb.col)
	}
	if verb.text != "find" {
		return nil, failf(ErrTextNotSimulated, "["+verb.text+" ...]")
	}
	if w := p.peek(); w.kind == tokWord && w.text == "where" {
		p.next()
	}
	var conds []cond
	for {
		t := p.peek()
		switch t.kind {
		case tokRBrack:
			p.next()
			return conds, nil
		case tokEOF:
			return nil, failf(ErrTextSyntax, open.col)
		}
		c, err := p.cond()
		if err != nil {
			return nil, err
		}
		conds = append(conds, c)
	}
}

// cond reads one prop=value or prop~regex, all glued together.
func (p *parser) cond() (cond, *cmdError) {
	name := p.next()
	if name.kind != tokWord {
		return cond{}, failf(ErrTextSyntax, name.col)
	}
	op := p.next()
	if (op.kind != tokEq && op.kind != tokTilde) || !op.glued {
		return cond{}, failf(ErrTextSyntax, op.col)
	}
	c := cond{prop: name.text, regex: op.kind == tokTilde, col: name.col}
	v := p.peek()
	if v.glued && (v.kind == tokWord || v.kind == tokString) {
		p.next()
		c.value = v.text
	}
	return c, nil
}
