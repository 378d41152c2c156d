// Command tsmdump prints what an InfluxDB 1.x shard holds on disk, decoded by InfluxDB's own
// storage engine package (tsdb/engine/tsm1, Debian's golang-github-influxdb-influxdb-dev), so
// tierflow's tests can check values against the bytes on disk rather than against a query.
//
// It plays the part of upstream's `influx_inspect export`, which Debian does not ship (neither
// as a binary nor as source), and differs from it on purpose where an oracle must:
//
//   - every unreadable file, key or WAL entry is an error (exit 1), never skipped;
//   - output is JSON lines with every name and string as base64 of its raw bytes and every float
//     as its IEEE-754 bits, so nothing is lost to formatting (export writes string fields with
//     raw newlines, which no line-based reader can split back);
//   - WAL deletes are printed as records (export only warns about them), so the reader can
//     apply them in order.
//
// Records, in the order the engine applies them: for each shard directory (sorted), each TSM
// file in the file store's order (by name), then each WAL segment (by name) entry by entry.
//
//	{"op":"write","db":…,"rp":…,"shard":…,"source":…,"key":b64,"measurement":b64,
//	 "tags":[[b64,b64],…],"field":b64,"type":"float|integer|unsigned|boolean|string",
//	 "times":[ns,…],"values":[…]}
//	{"op":"delete","db":…,"rp":…,"shard":…,"source":…,"keys":[b64,…],"min":ns,"max":ns}
//
// Float values are uint64 bit patterns, strings base64 of their bytes, the rest JSON as is.
package main

import (
	"bufio"
	"encoding/json"
	"flag"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/influxdata/influxdb/models"
	"github.com/influxdata/influxdb/tsdb/engine/tsm1"
)

type shard struct {
	db, rp, id string
	tsm, wal   []string
}

type writeRecord struct {
	Op          string          `json:"op"`
	DB          string          `json:"db"`
	RP          string          `json:"rp"`
	Shard       string          `json:"shard"`
	Source      string          `json:"source"`
	Key         []byte          `json:"key"`
	Measurement []byte          `json:"measurement"`
	Tags        [][2][]byte     `json:"tags"`
	Field       []byte          `json:"field"`
	Type        string          `json:"type"`
	Times       []int64         `json:"times"`
	Values      json.RawMessage `json:"values"`
}

type deleteRecord struct {
	Op     string   `json:"op"`
	DB     string   `json:"db"`
	RP     string   `json:"rp"`
	Shard  string   `json:"shard"`
	Source string   `json:"source"`
	Keys   [][]byte `json:"keys"`
	Min    int64    `json:"min"`
	Max    int64    `json:"max"`
}

func main() {
	dataDir := flag.String("datadir", "", "the server's [data] dir")
	walDir := flag.String("waldir", "", "the server's [data] wal-dir")
	database := flag.String("database", "", "only this database (default: all)")
	retention := flag.String("retention", "", "only this retention policy (needs -database)")
	flag.Parse()
	if *dataDir == "" || *walDir == "" || (*retention != "" && *database == "") {
		fmt.Fprintln(os.Stderr, "usage: tsmdump -datadir DIR -waldir DIR [-database DB [-retention RP]]")
		os.Exit(2)
	}
	shards, err := findShards(*dataDir, *walDir, *database, *retention)
	if err == nil {
		err = dump(shards)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "tsmdump:", err)
		os.Exit(1)
	}
}

// findShards lists <dir>/<db>/<rp>/<shard id>/ files of both trees, as upstream export does.
func findShards(dataDir, walDir, database, retention string) ([]*shard, error) {
	byPath := map[string]*shard{}
	collect := func(root string, keep func(name string) bool, add func(s *shard, path string)) error {
		return filepath.Walk(root, func(path string, info os.FileInfo, err error) error {
			if err != nil {
				if os.IsNotExist(err) && path == root {
					return nil
				}
				return err
			}
			if info.IsDir() || !keep(info.Name()) {
				return nil
			}
			rel, err := filepath.Rel(root, path)
			if err != nil {
				return err
			}
			parts := strings.Split(rel, string(os.PathSeparator))
			if len(parts) != 4 {
				return fmt.Errorf("%s: not <db>/<rp>/<shard>/<file> under %s", path, root)
			}
			if (database != "" && parts[0] != database) || (retention != "" && parts[1] != retention) {
				return nil
			}
			id := filepath.Join(parts[0], parts[1], parts[2])
			s := byPath[id]
			if s == nil {
				s = &shard{db: parts[0], rp: parts[1], id: parts[2]}
				byPath[id] = s
			}
			add(s, path)
			return nil
		})
	}
	isTSM := func(name string) bool { return filepath.Ext(name) == "."+tsm1.TSMFileExtension }
	isWAL := func(name string) bool {
		return strings.HasPrefix(name, tsm1.WALFilePrefix) && filepath.Ext(name) == "."+tsm1.WALFileExtension
	}
	if err := collect(dataDir, isTSM, func(s *shard, p string) { s.tsm = append(s.tsm, p) }); err != nil {
		return nil, err
	}
	if err := collect(walDir, isWAL, func(s *shard, p string) { s.wal = append(s.wal, p) }); err != nil {
		return nil, err
	}
	ids := make([]string, 0, len(byPath))
	for id := range byPath {
		ids = append(ids, id)
	}
	sort.Strings(ids)
	shards := make([]*shard, 0, len(ids))
	for _, id := range ids {
		s := byPath[id]
		// The file store orders TSM files by path, the WAL replays segments by name: later
		// files win on equal timestamps, so the reader must see them in this order.
		sort.Strings(s.tsm)
		sort.Strings(s.wal)
		shards = append(shards, s)
	}
	return shards, nil
}

func dump(shards []*shard) error {
	out := bufio.NewWriterSize(os.Stdout, 1<<20)
	enc := json.NewEncoder(out)
	for _, s := range shards {
		for _, path := range s.tsm {
			if err := dumpTSM(enc, s, path); err != nil {
				return fmt.Errorf("%s: %v", path, err)
			}
		}
		for _, path := range s.wal {
			if err := dumpWAL(enc, s, path); err != nil {
				return fmt.Errorf("%s: %v", path, err)
			}
		}
	}
	return out.Flush()
}

func dumpTSM(enc *json.Encoder, s *shard, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	// NewTSMReader applies the file's tombstones; Close closes f.
	r, err := tsm1.NewTSMReader(f)
	if err != nil {
		f.Close()
		return err
	}
	defer r.Close()
	for i := 0; i < r.KeyCount(); i++ {
		key, _ := r.KeyAt(i)
		values, err := r.ReadAll(key)
		if err != nil {
			return fmt.Errorf("key %q: %v", key, err)
		}
		if err := writeValues(enc, s, path, key, values); err != nil {
			return fmt.Errorf("key %q: %v", key, err)
		}
	}
	return nil
}

func dumpWAL(enc *json.Encoder, s *shard, path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	r := tsm1.NewWALSegmentReader(f)
	defer r.Close()
	for r.Next() {
		entry, err := r.Read()
		if err != nil {
			return fmt.Errorf("entry after byte %d: %v", r.Count(), err)
		}
		switch e := entry.(type) {
		case *tsm1.WriteWALEntry:
			// Map order is random, but each key's values keep their order, which is all the
			// last-write-wins rule needs.
			for key, values := range e.Values {
				if err := writeValues(enc, s, path, []byte(key), values); err != nil {
					return fmt.Errorf("key %q: %v", key, err)
				}
			}
		case *tsm1.DeleteRangeWALEntry:
			if err := enc.Encode(deleteRecord{"delete", s.db, s.rp, s.id, path, e.Keys, e.Min, e.Max}); err != nil {
				return err
			}
		case *tsm1.DeleteWALEntry:
			// The cache loader replays this as a delete of every time (Cache.Delete).
			rec := deleteRecord{"delete", s.db, s.rp, s.id, path, e.Keys, math.MinInt64, math.MaxInt64}
			if err := enc.Encode(rec); err != nil {
				return err
			}
		default:
			return fmt.Errorf("entry after byte %d: unknown kind %T", r.Count(), entry)
		}
	}
	return nil
}

func writeValues(enc *json.Encoder, s *shard, path string, key []byte, values []tsm1.Value) error {
	if len(values) == 0 {
		return nil
	}
	seriesKey, field := tsm1.SeriesAndFieldFromCompositeKey(key)
	// ParseKey is the engine's own reading of a series key: it unescapes names and tags.
	name, tags := models.ParseKey(seriesKey)
	rec := writeRecord{
		Op: "write", DB: s.db, RP: s.rp, Shard: s.id, Source: path,
		Key: key, Measurement: []byte(name), Field: field,
		Tags:  make([][2][]byte, 0, len(tags)),
		Times: make([]int64, len(values)),
	}
	for _, tag := range tags {
		rec.Tags = append(rec.Tags, [2][]byte{tag.Key, tag.Value})
	}
	typed := make([]interface{}, len(values))
	for i, value := range values {
		rec.Times[i] = value.UnixNano()
		var kind string
		switch v := value.Value().(type) {
		case float64:
			kind, typed[i] = "float", math.Float64bits(v)
		case int64:
			kind, typed[i] = "integer", v
		case uint64:
			kind, typed[i] = "unsigned", v
		case bool:
			kind, typed[i] = "boolean", v
		case string:
			kind, typed[i] = "string", []byte(v)
		default:
			return fmt.Errorf("value of unknown type %T at %d", v, rec.Times[i])
		}
		if rec.Type == "" {
			rec.Type = kind
		} else if rec.Type != kind {
			return fmt.Errorf("%s and %s values under one key", rec.Type, kind)
		}
	}
	raw, err := json.Marshal(typed)
	if err != nil {
		return err
	}
	rec.Values = raw
	return enc.Encode(rec)
}
