// Entry point of the cdc Pinot engine: Apache Pinot's own library code run in-process,
// because no Pinot server or controller can run where cdc is built and tested. The
// protocol is JSON lines (stdin in, stdout out) so cdc/clients/pinot_engine.py can drive it.
//
//   check                                   controller-side schema + table config validation
//   logical                                 controller-side logical table config validation
//                                           (POST /logicalTables, or PUT with "update": true)
//   upsert --schema F --table F [--rows-per-segment N]
//                                           a server's REALTIME FULL-upsert ingestion path
//   query  --schema F --table F --sql S     the same segments, answered by Pinot's query engine
//   version                                 prints {"pinot": "<version>"}
package cdc.pinot;

import java.io.BufferedReader;
import java.io.FileDescriptor;
import java.io.FileOutputStream;
import java.io.InputStreamReader;
import java.io.PrintStream;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.HashMap;
import java.util.Map;
import org.apache.pinot.common.version.PinotVersion;
import org.apache.pinot.spi.utils.JsonUtils;

public final class Main {
  static final String ERROR_PREFIX = "pinot-engine error: ";

  private Main() {
  }

  public static void main(String[] args) {
    // stdout carries the protocol only: anything a library prints goes to stderr instead.
    PrintStream out = new PrintStream(new FileOutputStream(FileDescriptor.out), false, StandardCharsets.UTF_8);
    System.setOut(System.err);
    if (args.length == 0) {
      usage();
    }
    try {
      run(args, new JsonLines(new BufferedReader(new InputStreamReader(System.in, StandardCharsets.UTF_8), 1 << 16),
          out));
    } catch (Throwable t) {
      // One findable line for the Python client, then the details.
      System.err.println(ERROR_PREFIX + ContractCheck.message(t).replace('\n', ' '));
      t.printStackTrace();
      out.flush();
      System.exit(1);
    }
    out.flush();
  }

  private static void run(String[] args, JsonLines lines) throws Exception {
    Map<String, String> opts = options(args);
    switch (args[0]) {
      case "check":
        ContractCheck.run(lines);
        break;
      case "logical":
        LogicalCheck.run(lines);
        break;
      case "upsert":
        try (UpsertMirror mirror = UpsertMirror.open(read(opts, "--schema"), read(opts, "--table"),
            Integer.parseInt(opts.getOrDefault("--rows-per-segment", "0")))) {
          mirror.consume(lines);
          mirror.writeValidRows(lines);
        }
        break;
      case "query":
        try (UpsertMirror mirror = UpsertMirror.open(read(opts, "--schema"), read(opts, "--table"),
            Integer.parseInt(opts.getOrDefault("--rows-per-segment", "0")))) {
          mirror.consume(lines);
          SqlQuery.run(mirror, required(opts, "--sql"), lines);
        }
        break;
      case "version":
        lines.write(Map.of("pinot", PinotVersion.VERSION));
        break;
      default:
        usage();
    }
  }

  static String engineName() {
    return "Apache Pinot " + PinotVersion.VERSION
        + " in-process (MutableSegmentImpl + ConcurrentMapPartitionUpsertMetadataManager), no server";
  }

  private static Map<String, String> options(String[] args) {
    Map<String, String> opts = new HashMap<>();
    for (int i = 1; i + 1 < args.length; i += 2) {
      opts.put(args[i], args[i + 1]);
    }
    return opts;
  }

  private static String required(Map<String, String> opts, String name) {
    String v = opts.get(name);
    if (v == null) {
      usage();
    }
    return v;
  }

  private static String read(Map<String, String> opts, String name) throws Exception {
    return Files.readString(Path.of(required(opts, name)), StandardCharsets.UTF_8);
  }

  private static void usage() {
    System.err.println("usage: check | logical | upsert --schema F --table F [--rows-per-segment N]"
        + " | query --schema F --table F --sql S | version   (JSON lines on stdin/stdout)");
    System.exit(2);
  }

  /** JSON lines in and out, with Pinot's own Jackson mapper. */
  static final class JsonLines {
    private final BufferedReader _in;
    private final PrintStream _out;

    JsonLines(BufferedReader in, PrintStream out) {
      _in = in;
      _out = out;
    }

    /** Next non-blank input line, or null at the end of input. */
    String next() throws java.io.IOException {
      String line;
      while ((line = _in.readLine()) != null) {
        if (!line.isBlank()) {
          return line;
        }
      }
      return null;
    }

    void write(Object value) throws java.io.IOException {
      _out.println(JsonUtils.objectToString(value));
    }

    void flush() {
      _out.flush();
    }
  }
}
