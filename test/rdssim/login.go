package rdssim

import (
	"fmt"
	"strconv"
	"strings"
)

// DefaultWidth is the console width when the login name asks for none.
const DefaultWidth = 80

// consoleOptions are the console settings a login name carries after '+'
// ("admin+ct4096w"): c no colours, t no terminal detection, e dumb
// terminal, <N>w width, <N>h height. Only the width changes what the
// simulator prints; the others are accepted so a login that uses them works.
type consoleOptions struct {
	user  string
	width int
}

// parseLogin splits a login name into the user and its console options. An
// option it does not know is an error: the simulator refuses rather than
// guess how RouterOS would read it.
func parseLogin(login string) (consoleOptions, error) {
	user, opts, _ := strings.Cut(login, "+")
	o := consoleOptions{user: user, width: DefaultWidth}
	for i := 0; i < len(opts); {
		c := opts[i]
		switch {
		case c == 'c' || c == 't' || c == 'e':
			i++
		case c >= '0' && c <= '9':
			j := i
			for j < len(opts) && opts[j] >= '0' && opts[j] <= '9' {
				j++
			}
			if j == len(opts) || (opts[j] != 'w' && opts[j] != 'h') {
				return o, fmt.Errorf("console option %q: a number must be followed by w or h", opts[i:])
			}
			n, err := strconv.Atoi(opts[i:j])
			if err != nil || n == 0 {
				return o, fmt.Errorf("console option %q: bad number", opts[i:j+1])
			}
			if opts[j] == 'w' {
				o.width = n
			}
			i = j + 1
		default:
			return o, fmt.Errorf("unknown console option %q", string(c))
		}
	}
	return o, nil
}
