// re2match: the tests' oracle for measurement patterns. InfluxDB compiles an InfluxQL regex
// literal with Go's regexp (RE2 syntax) and matches names with MatchString; this does the same
// for the patterns and names it is given, one JSON request per line on stdin:
//
//	{"pattern": "^cpu", "names": ["cpu", "mem"]} -> {"matches": [true, false]}
//	{"pattern": "(?=x)", "names": []}            -> {"error": "..."}
package main

import (
	"bufio"
	"encoding/json"
	"os"
	"regexp"
)

type request struct {
	Pattern string   `json:"pattern"`
	Names   []string `json:"names"`
}

type answer struct {
	Matches []bool `json:"matches"`
	Error   string `json:"error,omitempty"`
}

func main() {
	in := bufio.NewScanner(os.Stdin)
	in.Buffer(make([]byte, 1<<20), 1<<24)
	out := json.NewEncoder(os.Stdout)
	for in.Scan() {
		var req request
		if err := json.Unmarshal(in.Bytes(), &req); err != nil {
			panic(err)
		}
		re, err := regexp.Compile(req.Pattern)
		if err != nil {
			_ = out.Encode(answer{Error: err.Error()})
			continue
		}
		matches := make([]bool, len(req.Names))
		for i, name := range req.Names {
			matches[i] = re.MatchString(name)
		}
		_ = out.Encode(answer{Matches: matches})
	}
}
