package rdssim

import "strings"

type tokenKind int

const (
	tokWord   tokenKind = iota // unquoted word: /disk, add, slot, 4420
	tokString                  // quoted string, value unescaped
	tokEq                      // =
	tokTilde                   // ~
	tokLBrack                  // [
	tokRBrack                  // ]
	tokEOF
)

type token struct {
	kind tokenKind
	text string // unescaped value for words and strings
	col  int    // 1-based column of the token's first byte
	// glued is true when no whitespace separates this token from the one
	// before it, which is how name=value pairs are told from loose words.
	glued bool
}

// wordByte is the strict set of bytes an unquoted word may hold. RouterOS
// gives meaning to many others (';' separates commands, '$' substitutes
// variables, '{' opens a block, '#' a comment); the driver quotes every
// value, so anything outside this set in a word is refused rather than
// interpreted.
func wordByte(c byte) bool {
	switch {
	case c >= 'a' && c <= 'z', c >= 'A' && c <= 'Z', c >= '0' && c <= '9':
		return true
	}
	return strings.IndexByte("._-/:@+,", c) >= 0
}

// stringEscapes are the escapes accepted inside quoted strings. RouterOS has
// more (\n, \t, hex); the driver needs none of them, so they are refused.
var stringEscapes = map[byte]byte{'"': '"', '\\': '\\', '$': '$', '?': '?', '_': ' '}

// lex splits one command line into tokens, or returns the syntax error
// RouterOS-like text with the column of the first offending byte.
func lex(line string) ([]token, *cmdError) {
	var toks []token
	glued := false
	for i := 0; i < len(line); {
		c := line[i]
		col := i + 1
		switch {
		case c == ' ' || c == '\t':
			i++
			glued = false
			continue
		case c == '=':
			toks = append(toks, token{kind: tokEq, text: "=", col: col, glued: glued})
			i++
		case c == '~':
			toks = append(toks, token{kind: tokTilde, text: "~", col: col, glued: glued})
			i++
		case c == '[':
			toks = append(toks, token{kind: tokLBrack, text: "[", col: col, glued: glued})
			i++
		case c == ']':
			toks = append(toks, token{kind: tokRBrack, text: "]", col: col, glued: glued})
			i++
		case c == '"':
			s, end, err := lexString(line, i)
			if err != nil {
				return nil, err
			}
			toks = append(toks, token{kind: tokString, text: s, col: col, glued: glued})
			i = end
			// A string glued to a following word ("a"b) is concatenation in
			// RouterOS; we do not reproduce it, so it is refused.
			if i < len(line) && wordByte(line[i]) {
				return nil, failf(ErrTextSyntax, i+1)
			}
		case wordByte(c):
			j := i
			for j < len(line) && wordByte(line[j]) {
				j++
			}
			toks = append(toks, token{kind: tokWord, text: line[i:j], col: col, glued: glued})
			i = j
		default:
			return nil, failf(ErrTextSyntax, col)
		}
		glued = true
	}
	toks = append(toks, token{kind: tokEOF, col: len(line) + 1, glued: glued})
	return toks, nil
}

// lexString reads the quoted string starting at line[start] == '"' and
// returns its value and the index just past the closing quote.
func lexString(line string, start int) (string, int, *cmdError) {
	var b strings.Builder
	for i := start + 1; i < len(line); i++ {
		c := line[i]
		switch {
		case c == '"':
			return b.String(), i + 1, nil
		case c == '\\':
			if i+1 >= len(line) {
				return "", 0, failf(ErrTextSyntax, i+1)
			}
			r, ok := stringEscapes[line[i+1]]
			if !ok {
				return "", 0, failf(ErrTextSyntax, i+1)
			}
			b.WriteByte(r)
			i++
		case c == '$' || c == '?':
			// Unescaped, these would substitute a variable or ask for help.
			return "", 0, failf(ErrTextSyntax, i+1)
		case c < 0x20 || c == 0x7f:
			return "", 0, failf(ErrTextSyntax, i+1)
		default:
			b.WriteByte(c)
		}
	}
	// Unterminated: the error points at the opening quote.
	return "", 0, failf(ErrTextSyntax, start+1)
}
