// `upsert` mode: what a Pinot server builds from the records of a REALTIME FULL-upsert table's
// topic, built with the server's own classes and no server: per stream partition, consuming
// segments (MutableSegmentImpl, configured as RealtimeSegmentDataManager configures them),
// rows decoded like JSONMessageDecoder and run through the table's TransformPipeline, and one
// partition upsert metadata manager from TableUpsertMetadataManagerFactory. What a query sees
// is then each segment's queryable-doc bitmap (valid docs minus deleted keys).
//
// A full segment is "rolled" like a server does at the flush threshold: a new consuming
// segment with the next sequence number takes over. The full one stays a MutableSegmentImpl
// (a server would convert it to an immutable segment with the same valid docs).
package cdc.pinot;

import com.fasterxml.jackson.databind.JsonNode;
import java.io.File;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.nio.file.Files;
import java.nio.file.Path;
import java.util.ArrayList;
import java.util.Comparator;
import java.util.LinkedHashMap;
import java.util.List;
import java.util.Map;
import java.util.TreeMap;
import java.util.stream.Stream;
import org.apache.pinot.common.metadata.segment.SegmentZKMetadata;
import org.apache.pinot.common.metrics.ServerMetrics;
import org.apache.pinot.common.utils.LLCSegmentName;
import org.apache.pinot.segment.local.indexsegment.mutable.MutableSegmentImpl;
import org.apache.pinot.segment.local.io.writer.impl.MmapMemoryManager;
import org.apache.pinot.segment.local.realtime.impl.RealtimeSegmentConfig;
import org.apache.pinot.segment.local.realtime.impl.RealtimeSegmentStatsHistory;
import org.apache.pinot.segment.local.segment.creator.TransformPipeline;
import org.apache.pinot.segment.local.segment.readers.PinotSegmentRecordReader;
import org.apache.pinot.segment.local.upsert.PartitionUpsertMetadataManager;
import org.apache.pinot.segment.local.upsert.TableUpsertMetadataManager;
import org.apache.pinot.segment.local.upsert.TableUpsertMetadataManagerFactory;
import org.apache.pinot.segment.local.utils.IngestionUtils;
import org.apache.pinot.segment.spi.MutableSegment;
import org.apache.pinot.segment.spi.index.mutable.ThreadSafeMutableRoaringBitmap;
import org.apache.pinot.spi.config.table.IndexingConfig;
import org.apache.pinot.spi.config.table.TableConfig;
import org.apache.pinot.spi.data.FieldSpec;
import org.apache.pinot.spi.data.Schema;
import org.apache.pinot.spi.data.readers.GenericRow;
import org.apache.pinot.spi.env.PinotConfiguration;
import org.apache.pinot.spi.stream.StreamConfig;
import org.apache.pinot.spi.utils.CommonConstants;
import org.apache.pinot.spi.utils.IngestionConfigUtils;
import org.apache.pinot.spi.utils.JsonUtils;
import org.apache.pinot.spi.utils.builder.TableNameBuilder;

final class UpsertMirror implements AutoCloseable {
  private static final int MAX_LOGGED_ERRORS = 5;

  final Schema _schema;
  final TableConfig _tableConfig;
  private final String _tableNameWithType;
  private final String _topic;
  private final int _capacity;
  private final Path _dir;
  private final RealtimeSegmentStatsHistory _statsHistory;
  private final TableUpsertMetadataManager _upsert;
  private final TransformPipeline _pipeline;
  private final FlatJsonDecoder _decoder = new FlatJsonDecoder();
  private final TreeMap<Integer, Partition> _partitions = new TreeMap<>();
  private long _records;
  private long _errors;
  private long _filtered;
  private String _firstError;

  private UpsertMirror(Schema schema, TableConfig tableConfig, int rowsPerSegment) throws Exception {
    _schema = schema;
    _tableConfig = tableConfig;
    _tableNameWithType = tableConfig.getTableName();
    Map<String, String> stream = IngestionConfigUtils.getStreamConfigMaps(tableConfig).get(0);
    StreamConfig streamConfig = new StreamConfig(_tableNameWithType, stream);
    _topic = streamConfig.getTopicName();
    // As RealtimeSegmentDataManager: the stream's flush threshold, else Pinot's default.
    int flushRows = streamConfig.getFlushThresholdRows();
    _capacity = rowsPerSegment > 0 ? rowsPerSegment
        : flushRows > 0 ? flushRows : StreamConfig.DEFAULT_FLUSH_THRESHOLD_ROWS;
    _dir = Files.createTempDirectory("cdc-pinot-engine-");
    _statsHistory = RealtimeSegmentStatsHistory.deserializeFrom(_dir.resolve("stats.ser").toFile());
    _upsert = TableUpsertMetadataManagerFactory.create(new PinotConfiguration(), tableConfig, schema,
        InProcessTable.dataManager(_tableNameWithType, _dir.toFile()), null);
    _pipeline = new TransformPipeline(tableConfig, schema);
    _decoder.init(IngestionUtils.getFieldsForRecordExtractor(tableConfig, schema), null);
  }

  static UpsertMirror open(String schemaJson, String tableJson, int rowsPerSegment) throws Exception {
    Schema schema = Schema.fromString(schemaJson);
    TableConfig tableConfig = JsonUtils.stringToObject(tableJson, TableConfig.class);
    return new UpsertMirror(schema, tableConfig, rowsPerSegment);
  }

  /** Reads {"partition": int, "offset": long, "value": {...}} lines until the end of input. */
  void consume(Main.JsonLines lines) throws IOException {
    String line;
    while ((line = lines.next()) != null) {
      JsonNode record = JsonUtils.stringToJsonNode(line);
      add(record.path("partition").asInt(0), record.path("offset").asLong(-1),
          record.path("value").toString().getBytes(StandardCharsets.UTF_8));
    }
  }

  /** One Kafka message: decode, transform, index (errors drop the record, as on a server). */
  void add(int partition, long offset, byte[] payload) {
    _records++;
    TransformPipeline.Result result;
    try {
      result = _pipeline.processRow(_decoder.decode(payload));
    } catch (Exception e) {
      error(partition, offset, "decode/transform", e);
      return;
    }
    _filtered += result.getSkippedRowCount();
    Partition p = _partitions.computeIfAbsent(partition, Partition::new);
    for (GenericRow row : result.getTransformedRows()) {
      try {
        if (!p._consuming.index(row, null)) {
          p.roll();
        }
      } catch (Exception e) {
        error(partition, offset, "index", e);
      }
    }
  }

  private void error(int partition, long offset, String stage, Exception e) {
    _errors++;
    StringBuilder msg = new StringBuilder(stage + " failed at partition " + partition + " offset " + offset);
    for (Throwable t = e; t != null; t = t.getCause()) {   // Pinot wraps the telling message
      msg.append(": ").append(ContractCheck.message(t));
    }
    if (_firstError == null) {
      _firstError = msg.toString();
    }
    if (_errors <= MAX_LOGGED_ERRORS) {
      System.err.println(msg);
    }
  }

  TableUpsertMetadataManager upsertManager() {
    return _upsert;
  }

  /** A table that consumed nothing yet still has its first consuming segment (empty), as a
   * server's does: queries then answer over no rows instead of failing on no segment. */
  void ensureSegment() {
    if (_partitions.isEmpty()) {
      _partitions.computeIfAbsent(0, Partition::new);
    }
  }

  /** Every segment of every partition, in partition then sequence order. */
  List<MutableSegment> segments() {
    List<MutableSegment> all = new ArrayList<>();
    _partitions.values().forEach(p -> all.addAll(p._segments));
    return all;
  }

  /** The docs a query sees: queryable docs when the table has a delete column, else valid docs. */
  static ThreadSafeMutableRoaringBitmap visibleDocs(MutableSegment segment) {
    ThreadSafeMutableRoaringBitmap queryable = segment.getQueryableDocIds();
    return queryable != null ? queryable : segment.getValidDocIds();
  }

  void writeValidRows(Main.JsonLines lines) throws IOException {
    long valid = 0;
    List<FieldSpec> fields = new ArrayList<>(_schema.getAllFieldSpecs());
    GenericRow row = new GenericRow();
    for (MutableSegment segment : segments()) {
      try (PinotSegmentRecordReader reader = new PinotSegmentRecordReader()) {
        reader.init(segment);
        for (int docId : visibleDocs(segment).getMutableRoaringBitmap().toArray()) {
          row.clear();
          reader.getRecord(docId, row);
          Map<String, Object> out = new LinkedHashMap<>();
          for (FieldSpec f : fields) {
            out.put(f.getName(), PinotValues.of(f, row));
          }
          lines.write(Map.of("row", out));
          valid++;
        }
      }
    }
    Map<String, Object> summary = new LinkedHashMap<>();
    summary.put("records", _records);
    summary.put("valid", valid);
    summary.put("partitions", _partitions.size());
    summary.put("segments", segments().size());
    summary.put("rows_per_segment", _capacity);
    summary.put("errors", _errors);
    summary.put("first_error", _firstError);
    summary.put("filtered", _filtered);
    summary.put("engine", Main.engineName());
    lines.write(Map.of("summary", summary));
    lines.flush();
  }

  @Override
  public void close() throws IOException {
    // Server shutdown order: stop the upsert managers, release the segments, close.
    _upsert.stop();
    _partitions.values().forEach(p -> p._segments.forEach(MutableSegmentImpl::destroy));
    _upsert.close();
    try (Stream<Path> paths = Files.walk(_dir)) {
      paths.sorted(Comparator.reverseOrder()).map(Path::toFile).forEach(File::delete);
    }
  }

  /** One stream partition: its upsert metadata manager and its consuming segments. */
  private final class Partition {
    private final int _id;
    private final PartitionUpsertMetadataManager _upsertManager;
    private final List<MutableSegmentImpl> _segments = new ArrayList<>();
    private MutableSegmentImpl _consuming;

    Partition(int id) {
      _id = id;
      _upsertManager = _upsert.getOrCreatePartitionManager(id);
      roll();
    }

    void roll() {
      String rawTable = TableNameBuilder.extractRawTableName(_tableNameWithType);
      long now = System.currentTimeMillis();
      String name = new LLCSegmentName(rawTable, _id, _segments.size(), now).getSegmentName();
      SegmentZKMetadata zk = new SegmentZKMetadata(name);
      zk.setCreationTime(now);
      zk.setStatus(CommonConstants.Segment.Realtime.Status.IN_PROGRESS);
      IndexingConfig indexing = _tableConfig.getIndexingConfig();
      File consumerDir = _dir.resolve("consumers").toFile();
      consumerDir.mkdirs();
      // The settings RealtimeSegmentDataManager uses, with a server's defaults
      // (realtime.alloc.offheap=true, realtime.alloc.offheap.direct=false: memory-mapped files
      // in the consumer dir, so a mirror of any size fits; 2 values per multi-value cell).
      RealtimeSegmentConfig config = new RealtimeSegmentConfig.Builder(_tableConfig, _schema)
          .setTableNameWithType(_tableNameWithType)
          .setSegmentName(name)
          .setStreamName(_topic)
          .setSchema(_schema)
          .setTimeColumnName(_tableConfig.getValidationConfig().getTimeColumnName())
          .setCapacity(_capacity)
          .setAvgNumMultiValues(2)
          .setSegmentZKMetadata(zk)
          .setOffHeap(true)
          .setMemoryManager(new MmapMemoryManager(consumerDir.getAbsolutePath(), name, ServerMetrics.get()))
          .setStatsHistory(_statsHistory)
          .setAggregateMetrics(indexing.isAggregateMetrics())
          .setIngestionAggregationConfigs(IngestionConfigUtils.getAggregationConfigs(_tableConfig))
          .setDefaultNullHandlingEnabled(indexing.isNullHandlingEnabled())
          .setPartitionUpsertMetadataManager(_upsertManager)
          .setConsumerDir(consumerDir.getAbsolutePath())
          .setTextIndexConfig(indexing.getMultiColumnTextIndexConfig())
          .build();
      _consuming = new MutableSegmentImpl(config, ServerMetrics.get());
      _segments.add(_consuming);
    }
  }
}
